/**
 * Byte fixtures for the qcow2 codec tests (STYLE rule 4: fixtures from a builder, not hex
 * blobs). Deliberately independent of the codecs under test: it writes each field at the
 * offset the spec gives, with its own big-endian writer and literal spec numbers, so that a
 * wrong constant or offset in the codecs cannot cancel out in a test.
 */

/** A growable big-endian byte writer. */
export class ByteBuilder {
  private buf = new Uint8Array(256);
  private len = 0;

  get length(): number {
    return this.len;
  }

  private ensure(extra: number): void {
    if (this.len + extra <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + extra));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  u8(v: number): this {
    this.ensure(1);
    this.buf[this.len++] = v & 0xff;
    return this;
  }

  u16(v: number): this {
    return this.u8(v >>> 8).u8(v);
  }

  u32(v: number): this {
    return this.u8(v >>> 24).u8(v >>> 16).u8(v >>> 8).u8(v);
  }

  /** A 64-bit big-endian value, from a bigint or a non-negative safe integer. */
  u64(v: bigint | number): this {
    const big = BigInt.asUintN(64, BigInt(v));
    return this.u32(Number(big >> 32n)).u32(Number(big & 0xffffffffn));
  }

  bytes(data: Uint8Array | readonly number[]): this {
    this.ensure(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
    return this;
  }

  /** UTF-8 text, no terminator. */
  text(s: string): this {
    return this.bytes(new TextEncoder().encode(s));
  }

  zeros(n: number): this {
    this.ensure(n);
    this.len += n; // the buffer is zero-filled beyond len
    return this;
  }

  /** Zero bytes up to the next multiple of `n`. */
  padTo(n: number): this {
    return this.zeros((n - (this.len % n)) % n);
  }

  /** Zero bytes up to absolute length `n` (no-op when already there). */
  padToLength(n: number): this {
    return this.zeros(Math.max(0, n - this.len));
  }

  build(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

/** Header fields for {@link headerBytes}; defaults make a valid v3 image of 1 GiB, 64 KiB clusters. */
export interface HeaderFixture {
  magic: number;
  version: number;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  size: bigint | number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: bigint | number;
  refcountTableOffset: bigint | number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: bigint | number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
  /** Bytes written after compression_type, up to headerLength (default zeros). */
  trailing: Uint8Array;
}

/** The defaults of {@link headerBytes}: a valid v3 header of a 1 GiB image with 64 KiB clusters. */
export const DEFAULT_HEADER: HeaderFixture = {
  magic: 0x514649fb,
  version: 3,
  backingFileOffset: 0,
  backingFileSize: 0,
  clusterBits: 16,
  size: 1 << 30,
  cryptMethod: 0,
  l1Size: 2, // 1 GiB / (64 KiB * 8192 entries) = 2
  l1TableOffset: 0x30000,
  refcountTableOffset: 0x10000,
  refcountTableClusters: 1,
  nbSnapshots: 0,
  snapshotsOffset: 0,
  incompatibleFeatures: 0n,
  compatibleFeatures: 0n,
  autoclearFeatures: 0n,
  refcountOrder: 4,
  headerLength: 112,
  compressionType: 0,
  trailing: new Uint8Array(0),
};

/**
 * The header bytes at spec offsets (spec "Header"): 72 bytes for version 2, `headerLength`
 * bytes for version 3 (at least 104 are written even when `headerLength` says less).
 */
export function headerBytes(overrides: Partial<HeaderFixture> = {}): Uint8Array {
  const h = { ...DEFAULT_HEADER, ...overrides };
  const b = new ByteBuilder()
    .u32(h.magic) // 0
    .u32(h.version) // 4
    .u64(h.backingFileOffset) // 8
    .u32(h.backingFileSize) // 16
    .u32(h.clusterBits) // 20
    .u64(h.size) // 24
    .u32(h.cryptMethod) // 32
    .u32(h.l1Size) // 36
    .u64(h.l1TableOffset) // 40
    .u64(h.refcountTableOffset) // 48
    .u32(h.refcountTableClusters) // 56
    .u32(h.nbSnapshots) // 60
    .u64(h.snapshotsOffset); // 64
  if (h.version === 2) return b.build();
  b.u64(h.incompatibleFeatures) // 72
    .u64(h.compatibleFeatures) // 80
    .u64(h.autoclearFeatures) // 88
    .u32(h.refcountOrder) // 96
    .u32(h.headerLength); // 100
  if (h.headerLength > 104) b.u8(h.compressionType).bytes(h.trailing); // 104, 105...
  return b.padToLength(Math.max(104, h.headerLength)).build();
}

/** One header extension record: type, length, data, zero padding to 8 (spec "Header extensions"). */
export function extensionBytes(type: number, data: Uint8Array | readonly number[], declaredLength = data.length): Uint8Array {
  return new ByteBuilder().u32(type).u32(declaredLength).bytes(data).padTo(8).build();
}

/** Feature name table data (spec "Feature name table"): 48-byte entries. */
export function featureTableBytes(features: ReadonlyArray<{ type: number; bit: number; name: string }>): Uint8Array {
  const b = new ByteBuilder();
  for (const f of features) {
    const start = b.length;
    b.u8(f.type).u8(f.bit).text(f.name).padToLength(start + 48);
  }
  return b.build();
}

/** Bitmaps extension data (spec "Bitmaps extension"). */
export function bitmapsExtensionBytes(nbBitmaps: number, directorySize: number, directoryOffset: number, reserved = 0): Uint8Array {
  return new ByteBuilder().u32(nbBitmaps).u32(reserved).u64(directorySize).u64(directoryOffset).build();
}

/** A first cluster: header, then extension records, then an end marker, then the backing name. */
export function headerCluster(options: {
  header?: Partial<HeaderFixture>;
  extensions?: Uint8Array[];
  /** Written right after the end marker; the header's backing fields are set to point at it. */
  backingFile?: string;
  /** Leave out the end marker. */
  noEndMarker?: boolean;
}): Uint8Array {
  const headerFields = { ...DEFAULT_HEADER, ...options.header };
  const b = new ByteBuilder().zeros(Math.max(headerFields.version === 2 ? 72 : 104, headerFields.headerLength));
  for (const e of options.extensions ?? []) b.bytes(e);
  if (!options.noEndMarker) b.u32(0).u32(0);
  let fields: Partial<HeaderFixture> = headerFields;
  if (options.backingFile !== undefined) {
    const name = new TextEncoder().encode(options.backingFile);
    fields = { ...headerFields, backingFileOffset: b.length, backingFileSize: name.length };
    b.bytes(name);
  }
  b.padToLength(2 ** headerFields.clusterBits);
  const out = b.build();
  out.set(headerBytes(fields), 0);
  return out;
}

/** A 64-bit table entry from its bits: offset (bits 9-55 etc.) OR-ed with flag bits. */
export function entry64(value: bigint): Uint8Array {
  return new ByteBuilder().u64(value).build();
}

/** A table of 64-bit entries. */
export function table64(values: readonly bigint[]): Uint8Array {
  const b = new ByteBuilder();
  for (const v of values) b.u64(v);
  return b.build();
}

/** A compressed L2 descriptor built with bigint arithmetic straight from the spec. */
export function compressedDescriptor(clusterBits: number, hostOffset: bigint, additionalSectors: bigint): bigint {
  const x = BigInt(62 - (clusterBits - 8));
  return (1n << 62n) | (additionalSectors << x) | hostOffset;
}

/** Bitmap directory entry fields for {@link bitmapEntryBytes}. */
export interface BitmapEntryFixture {
  tableOffset: bigint | number;
  tableSize: number;
  flags: number;
  type: number;
  granularityBits: number;
  name: string;
  /** Overrides the name size field (default: the UTF-8 length of `name`). */
  nameSize?: number;
  extraData: Uint8Array;
  /** Overrides the extra data size field. */
  extraDataSize?: number;
  /** Padding bytes to write instead of zeros. */
  padding?: number;
}

/** One bitmap directory entry (spec "Bitmap directory"), padded to 8. */
export function bitmapEntryBytes(e: Partial<BitmapEntryFixture> & { name: string; tableOffset: number | bigint; tableSize: number }): Uint8Array {
  const name = new TextEncoder().encode(e.name);
  const extra = e.extraData ?? new Uint8Array(0);
  const b = new ByteBuilder()
    .u64(e.tableOffset)
    .u32(e.tableSize)
    .u32(e.flags ?? 2)
    .u8(e.type ?? 1)
    .u8(e.granularityBits ?? 16)
    .u16(e.nameSize ?? name.length)
    .u32(e.extraDataSize ?? extra.length)
    .bytes(extra)
    .bytes(name);
  while (b.length % 8 !== 0) b.u8(e.padding ?? 0);
  return b.build();
}

/** Snapshot table entry fields for {@link snapshotEntryBytes}. */
export interface SnapshotEntryFixture {
  l1TableOffset: number | bigint;
  l1Size: number;
  id: string;
  name: string;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: bigint;
  vmStateSize: number;
  /** Raw extra data (use {@link snapshotExtra} for the known fields). */
  extra: Uint8Array;
  extraDataSize?: number;
}

/** The known snapshot extra data fields, in spec order, as many as given. */
export function snapshotExtra(vmStateSizeLarge?: bigint, diskSize?: bigint, icount?: bigint): Uint8Array {
  const b = new ByteBuilder();
  if (vmStateSizeLarge !== undefined) b.u64(vmStateSizeLarge);
  if (diskSize !== undefined) b.u64(diskSize);
  if (icount !== undefined) b.u64(icount);
  return b.build();
}

/** One snapshot table entry (spec "Snapshots"), padded to 8. */
export function snapshotEntryBytes(e: Partial<SnapshotEntryFixture>): Uint8Array {
  const id = new TextEncoder().encode(e.id ?? '1');
  const name = new TextEncoder().encode(e.name ?? 'snap');
  const extra = e.extra ?? snapshotExtra(0n, 1n << 30n, -1n);
  return new ByteBuilder()
    .u64(e.l1TableOffset ?? 0x50000)
    .u32(e.l1Size ?? 2)
    .u16(id.length)
    .u16(name.length)
    .u32(e.dateSec ?? 1_700_000_000)
    .u32(e.dateNsec ?? 5)
    .u64(e.vmClockNsec ?? 0n)
    .u32(e.vmStateSize ?? 0)
    .u32(e.extraDataSize ?? extra.length)
    .bytes(extra)
    .bytes(id)
    .bytes(name)
    .padTo(8)
    .build();
}

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const b = new ByteBuilder();
  for (const p of parts) b.bytes(p);
  return b.build();
}

/** A copy of `bytes` with `patch` written at `offset`. */
export function patched(bytes: Uint8Array, offset: number, patch: Uint8Array | readonly number[]): Uint8Array {
  const out = bytes.slice();
  out.set(patch, offset);
  return out;
}
