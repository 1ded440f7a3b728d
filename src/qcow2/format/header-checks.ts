/**
 * The consistency rules of the qcow2 header (spec "Header", "Additional fields"; QEMU's
 * limits from `qcow2_do_open`), shared by the decoder, which reports corrupt or unsupported
 * images, and the encoder, which reports invalid arguments. Internal to `qcow2/format/`.
 * @internal
 */
import {
  AutoclearFeature,
  CompressionType,
  CryptMethod,
  HEADER_LENGTH_ALIGNMENT,
  HEADER_V2_LENGTH,
  HEADER_V3_MIN_LENGTH,
  HeaderOffset as O,
  IncompatibleFeature,
  KNOWN_INCOMPATIBLE_FEATURES,
  MAX_BACKING_FILE_NAME,
  MAX_CLUSTER_BITS,
  MAX_L1_TABLE_BYTES,
  MAX_REFCOUNT_ORDER,
  MAX_REFCOUNT_TABLE_BYTES,
  MAX_SNAPSHOTS,
  MIN_CLUSTER_BITS,
  MIN_CLUSTER_BITS_EXTENDED_L2,
  SNAPSHOT_HEADER_SIZE,
  TABLE_ENTRY_SIZE,
  V2_REFCOUNT_ORDER,
} from './constants.js';
import { SAFE_MAX, U32_MAX, checkInteger } from './bytes.js';
import { problem, type Direction } from './errors.js';
import { l1EntriesFor, makeGeometry } from './geometry.js';
import type { Qcow2Header } from './header.js';

/** cluster_bits: below 9 is corrupt, above 21 is beyond QEMU's limit. */
export function checkClusterBits(direction: Direction, clusterBits: number): void {
  if (clusterBits < MIN_CLUSTER_BITS) {
    throw problem(direction, 'header.cluster_bits', `${clusterBits} is below the minimum ${MIN_CLUSTER_BITS}`);
  }
  if (clusterBits > MAX_CLUSTER_BITS) {
    throw problem(direction, 'header.cluster_bits', `${clusterBits} is above ${MAX_CLUSTER_BITS} (2 MiB clusters), QEMU's limit`, true);
  }
}

/** header_length: 72 for version 2; at least 104, a multiple of 8 and within a cluster for version 3. */
export function checkHeaderLength(direction: Direction, version: number, headerLength: number, clusterBits: number): void {
  const field = 'header.header_length';
  if (version === 2) {
    if (headerLength !== HEADER_V2_LENGTH) throw problem(direction, field, `${headerLength} is not 72, the length of a version 2 header`);
    return;
  }
  if (headerLength < HEADER_V3_MIN_LENGTH) throw problem(direction, field, `${headerLength} is below the minimum ${HEADER_V3_MIN_LENGTH}`);
  if (headerLength % HEADER_LENGTH_ALIGNMENT !== 0) throw problem(direction, field, `${headerLength} is not a multiple of 8`);
  if (headerLength > 2 ** clusterBits) throw problem(direction, field, `${headerLength} exceeds the cluster size ${2 ** clusterBits}`);
}

/**
 * Every consistency rule of the header (and of the tables it points to, against `fileSize`).
 * Shared by the decoder (errors are corrupt/unsupported) and the encoder (argument errors).
 */
export function validateHeader(h: Qcow2Header, direction: Direction, fileSize?: number): void {
  if (direction === 'encode') checkEncodable(h);
  checkClusterBits(direction, h.clusterBits);
  checkHeaderLength(direction, h.version, h.headerLength, h.clusterBits);
  const clusterSize = 2 ** h.clusterBits;
  const inc = h.incompatibleFeatures;

  if (h.version === 2) {
    if (inc !== 0n || h.compatibleFeatures !== 0n || h.autoclearFeatures !== 0n || h.refcountOrder !== V2_REFCOUNT_ORDER || h.compressionType !== 0 || h.trailingBytes.length !== 0) {
      throw problem(direction, 'header.version', 'a version 2 header has no feature bits, 16-bit refcounts and no additional fields');
    }
  } else {
    const expected = Math.max(0, h.headerLength - O.AFTER_COMPRESSION_TYPE);
    if (h.trailingBytes.length !== expected) {
      throw problem(direction, 'header.trailing_bytes', `has ${h.trailingBytes.length} bytes but header_length ${h.headerLength} implies ${expected}`);
    }
  }
  if ((inc & ~KNOWN_INCOMPATIBLE_FEATURES) !== 0n) {
    throw problem(direction, 'header.incompatible_features', `unknown incompatible feature(s) ${describeBits(inc & ~KNOWN_INCOMPATIBLE_FEATURES)}`, true);
  }
  if (h.refcountOrder > MAX_REFCOUNT_ORDER) {
    throw problem(direction, 'header.refcount_order', `${h.refcountOrder} exceeds ${MAX_REFCOUNT_ORDER} (64-bit refcounts)`);
  }
  checkCompression(direction, h);
  if ((inc & IncompatibleFeature.EXTENDED_L2) !== 0n && h.clusterBits < MIN_CLUSTER_BITS_EXTENDED_L2) {
    throw problem(direction, 'header.cluster_bits', `${h.clusterBits} is below ${MIN_CLUSTER_BITS_EXTENDED_L2}, the minimum with extended L2 entries`);
  }
  if ((h.autoclearFeatures & AutoclearFeature.RAW_EXTERNAL_DATA) !== 0n) {
    if ((inc & IncompatibleFeature.EXTERNAL_DATA_FILE) === 0n) {
      throw problem(direction, 'header.autoclear_features', 'the raw external data bit is set without the external data file bit');
    }
    if (h.backingFileOffset !== 0) {
      throw problem(direction, 'header.autoclear_features', 'the raw external data bit is set on an image with a backing file');
    }
  }
  if (h.cryptMethod === CryptMethod.AES || h.cryptMethod === CryptMethod.LUKS) {
    const name = h.cryptMethod === CryptMethod.AES ? 'AES' : 'LUKS';
    throw problem(direction, 'header.crypt_method', `the image is encrypted (${name}); encrypted images are not supported`, true);
  }
  if (h.cryptMethod !== CryptMethod.NONE) throw problem(direction, 'header.crypt_method', `${h.cryptMethod} is not a known encryption method`);

  checkBackingFile(direction, h, clusterSize, fileSize);
  if (h.refcountTableClusters === 0) throw problem(direction, 'header.refcount_table_clusters', 'is 0: the image has no refcount table');
  if (h.refcountTableClusters * clusterSize > MAX_REFCOUNT_TABLE_BYTES) {
    throw problem(direction, 'header.refcount_table_clusters', `${h.refcountTableClusters} clusters exceed QEMU's 8 MiB refcount table limit`, true);
  }
  checkTable(direction, 'header.refcount_table_offset', h.refcountTableOffset, h.refcountTableClusters * clusterSize, clusterSize, fileSize);
  checkL1(direction, h, fileSize);
  if (h.nbSnapshots > MAX_SNAPSHOTS) {
    throw problem(direction, 'header.nb_snapshots', `${h.nbSnapshots} exceeds QEMU's limit of ${MAX_SNAPSHOTS} snapshots`, true);
  }
  checkTable(direction, 'header.snapshots_offset', h.snapshotsOffset, h.nbSnapshots * SNAPSHOT_HEADER_SIZE, clusterSize, fileSize);
}

function checkEncodable(h: Qcow2Header): void {
  for (const key of ['backingFileOffset', 'size', 'l1TableOffset', 'refcountTableOffset', 'snapshotsOffset'] as const) {
    checkInteger('encode', `header.${key}`, h[key], 0, SAFE_MAX);
  }
  for (const key of ['version', 'backingFileSize', 'clusterBits', 'cryptMethod', 'l1Size', 'refcountTableClusters', 'nbSnapshots', 'refcountOrder', 'headerLength'] as const) {
    checkInteger('encode', `header.${key}`, h[key], 0, U32_MAX);
  }
  checkInteger('encode', 'header.compressionType', h.compressionType, 0, 255);
  for (const key of ['incompatibleFeatures', 'compatibleFeatures', 'autoclearFeatures'] as const) {
    const v = h[key];
    if (typeof v !== 'bigint' || v < 0n || v > 0xffffffffffffffffn) {
      throw problem('encode', `header.${key}`, `${String(v)} is not a 64-bit unsigned bigint`);
    }
  }
  if (h.version !== 2 && h.version !== 3) throw problem('encode', 'header.version', `version ${h.version} is not supported (2 and 3 are)`);
}

function checkCompression(direction: Direction, h: Qcow2Header): void {
  const field = 'header.compression_type';
  const bit = (h.incompatibleFeatures & IncompatibleFeature.COMPRESSION_TYPE) !== 0n;
  if (h.headerLength <= O.COMPRESSION_TYPE && h.compressionType !== 0) {
    throw problem(direction, field, `is ${h.compressionType} but header_length ${h.headerLength} leaves no room for it`);
  }
  if (h.compressionType !== CompressionType.DEFLATE && h.compressionType !== CompressionType.ZSTD) {
    throw problem(direction, field, `${h.compressionType} is not a known compression type (0 deflate, 1 zstd)`, true);
  }
  if (bit && h.compressionType === CompressionType.DEFLATE) {
    throw problem(direction, field, 'is 0 (deflate) but the compression type feature bit is set');
  }
  if (!bit && h.compressionType !== CompressionType.DEFLATE) {
    throw problem(direction, field, `is ${h.compressionType} but the compression type feature bit is clear`);
  }
}

function checkBackingFile(direction: Direction, h: Qcow2Header, clusterSize: number, fileSize?: number): void {
  if (h.backingFileOffset === 0) return;
  const field = 'header.backing_file_offset';
  if (h.backingFileOffset < h.headerLength) {
    throw problem(direction, field, `${h.backingFileOffset} lies inside the ${h.headerLength}-byte header`);
  }
  if (h.backingFileSize > MAX_BACKING_FILE_NAME) {
    throw problem(direction, 'header.backing_file_size', `${h.backingFileSize} exceeds the maximum ${MAX_BACKING_FILE_NAME}`);
  }
  if (h.backingFileOffset + h.backingFileSize > clusterSize) {
    throw problem(direction, field, `the name at ${h.backingFileOffset} (${h.backingFileSize} bytes) runs past the first cluster (${clusterSize} bytes)`);
  }
  if (fileSize !== undefined && h.backingFileOffset + h.backingFileSize > fileSize) {
    throw problem(direction, field, `the name at ${h.backingFileOffset} (${h.backingFileSize} bytes) runs past the end of the ${fileSize}-byte file`);
  }
}

function checkL1(direction: Direction, h: Qcow2Header, fileSize?: number): void {
  const clusterSize = 2 ** h.clusterBits;
  const geometry = makeGeometry({
    clusterBits: h.clusterBits,
    version: h.version,
    refcountOrder: h.refcountOrder,
    extendedL2: (h.incompatibleFeatures & IncompatibleFeature.EXTENDED_L2) !== 0n,
  });
  const needed = l1EntriesFor(h.size, geometry);
  if (needed * TABLE_ENTRY_SIZE > MAX_L1_TABLE_BYTES) {
    throw problem(direction, 'header.size', `virtual size ${h.size} needs an L1 table of ${needed} entries, beyond QEMU's 32 MiB limit`, true);
  }
  if (h.l1Size * TABLE_ENTRY_SIZE > MAX_L1_TABLE_BYTES) {
    throw problem(direction, 'header.l1_size', `${h.l1Size} entries exceed QEMU's 32 MiB L1 table limit`, true);
  }
  if (h.l1Size < needed) {
    throw problem(direction, 'header.l1_size', `${h.l1Size} entries cannot map the virtual size ${h.size} (${needed} needed)`);
  }
  checkTable(direction, 'header.l1_table_offset', h.l1TableOffset, h.l1Size * TABLE_ENTRY_SIZE, clusterSize, fileSize);
}

/** A table at `offset` of `length` bytes: cluster-aligned, not in the header cluster, in the file. */
function checkTable(direction: Direction, field: string, offset: number, length: number, clusterSize: number, fileSize?: number): void {
  if (offset % clusterSize !== 0) throw problem(direction, field, `${offset} is not aligned to the cluster size ${clusterSize}`);
  if (length === 0) return;
  if (offset === 0) throw problem(direction, field, 'is 0: the table would overlap the header');
  if (fileSize !== undefined && offset + length > fileSize) {
    throw problem(direction, field, `the table at ${offset} (${length} bytes) runs past the end of the ${fileSize}-byte file`);
  }
}

/** "bit 5, bit 17 'foo' (0x20020)": the set bits of a mask, with names when known. */
export function describeBits(mask: bigint, names: ReadonlyMap<number, string> = new Map()): string {
  const parts: string[] = [];
  for (let bit = 0; bit < 64; bit++) {
    if ((mask & (1n << BigInt(bit))) === 0n) continue;
    const name = names.get(bit);
    parts.push(name === undefined ? `bit ${bit}` : `bit ${bit} '${name}'`);
  }
  return `${parts.join(', ')} (0x${mask.toString(16)})`;
}
