/**
 * The qcow2 image header (spec "Header", "Additional fields", "Header padding"), versions 2
 * and 3: {@link decodeHeader} validates everything that can be checked from the header alone
 * (and the file size, when given); {@link encodeHeader} writes exactly `header_length` bytes.
 */
import {
  AutoclearFeature,
  CompatibleFeature,
  CompressionType,
  CryptMethod,
  HEADER_V2_LENGTH,
  HEADER_V3_LENGTH,
  HEADER_V3_MIN_LENGTH,
  HeaderOffset as O,
  IncompatibleFeature,
  KNOWN_INCOMPATIBLE_FEATURES,
  QCOW2_MAGIC,
  V2_REFCOUNT_ORDER,
} from './constants.js';
import { need, readU32, readU64, readU64Big, writeU32, writeU64, writeU64Big } from './bytes.js';
import { problem } from './errors.js';
import { checkClusterBits, checkHeaderLength, describeBits, validateHeader } from './header-checks.js';
import { featureNamesForError } from './extensions.js';

/**
 * A decoded qcow2 header. Field names follow the spec; sizes and offsets are in bytes.
 * A version 2 header has `headerLength` 72, `refcountOrder` 4 and zero feature masks.
 */
export interface Qcow2Header {
  /** 2 or 3. */
  version: number;
  /** Where the backing file name is stored in the file; 0 when there is no backing file. */
  backingFileOffset: number;
  /** Length of the backing file name in bytes (meaningless when `backingFileOffset` is 0). */
  backingFileSize: number;
  /** log2 of the cluster size, 9..21. */
  clusterBits: number;
  /** Virtual disk size in bytes. */
  size: number;
  /** 0: none (anything else is refused as encrypted). */
  cryptMethod: number;
  /** Number of entries of the active L1 table. */
  l1Size: number;
  /** Cluster-aligned offset of the active L1 table. */
  l1TableOffset: number;
  /** Cluster-aligned offset of the refcount table. */
  refcountTableOffset: number;
  /** Size of the refcount table in clusters (at least 1). */
  refcountTableClusters: number;
  /** Number of internal snapshots. */
  nbSnapshots: number;
  /** Cluster-aligned offset of the snapshot table. */
  snapshotsOffset: number;
  /** Incompatible feature bits (see `IncompatibleFeature`). */
  incompatibleFeatures: bigint;
  /** Compatible feature bits (see `CompatibleFeature`); unknown bits are kept. */
  compatibleFeatures: bigint;
  /** Auto-clear feature bits (see `AutoclearFeature`); unknown bits are kept. */
  autoclearFeatures: bigint;
  /** log2 of the refcount width in bits, 0..6. */
  refcountOrder: number;
  /** Length of the header in bytes: 72 (v2), or at least 104 and a multiple of 8 (v3). */
  headerLength: number;
  /** 0 deflate, 1 zstd; 0 when the field is absent (`headerLength` 104). */
  compressionType: number;
  /**
   * The bytes of the header after `compression_type` (byte 105 to `headerLength`): the padding
   * and any fields a later spec adds, kept so that rewriting the header preserves them.
   * Empty when `headerLength` <= 104. Its length must be `headerLength - 105` otherwise.
   */
  trailingBytes: Uint8Array;
}

/** The feature bits of a header as booleans. */
export interface Qcow2Features {
  dirty: boolean;
  corrupt: boolean;
  externalDataFile: boolean;
  compressionType: boolean;
  extendedL2: boolean;
  lazyRefcounts: boolean;
  /** Auto-clear bit 0: the bitmaps extension is consistent. */
  bitmaps: boolean;
  /** Auto-clear bit 1: the external data file is a consistent raw image. */
  rawExternalData: boolean;
}

/**
 * Decodes and validates the header at the start of a qcow2 image.
 *
 * @param bytes - the start of the file (at least `header_length` bytes; pass the whole first
 *   cluster so that unknown incompatible features can be named from the feature name table).
 *   Not modified and not retained: `trailingBytes` is a copy.
 * @param fileSize - the file's size in bytes; when given, tables and the backing file name
 *   must lie within it.
 * @throws Qcow2FormatError for a corrupt header, Qcow2UnsupportedError for a valid one this
 *   codec does not handle (version, encryption, unknown incompatible features, QEMU's limits).
 */
export function decodeHeader(bytes: Uint8Array, fileSize?: number): Qcow2Header {
  need(bytes, 0, 4, 'header.magic');
  const magic = readU32(bytes, O.MAGIC);
  if (magic !== QCOW2_MAGIC) {
    throw problem('decode', 'header.magic', `0x${magic.toString(16).padStart(8, '0')} is not the qcow2 magic 0x514649fb`);
  }
  need(bytes, 0, 8, 'header.version');
  const version = readU32(bytes, O.VERSION);
  if (version !== 2 && version !== 3) {
    throw problem('decode', 'header.version', `version ${version} is not supported (2 and 3 are)`, true);
  }
  need(bytes, 0, version === 2 ? HEADER_V2_LENGTH : HEADER_V3_MIN_LENGTH, 'header');
  const clusterBits = readU32(bytes, O.CLUSTER_BITS);
  checkClusterBits('decode', clusterBits);
  const headerLength = version === 2 ? HEADER_V2_LENGTH : readU32(bytes, O.HEADER_LENGTH);
  checkHeaderLength('decode', version, headerLength, clusterBits);
  need(bytes, 0, headerLength, 'header');

  const header: Qcow2Header = {
    version,
    backingFileOffset: readU64(bytes, O.BACKING_FILE_OFFSET, 'header.backing_file_offset'),
    backingFileSize: readU32(bytes, O.BACKING_FILE_SIZE),
    clusterBits,
    size: readU64(bytes, O.SIZE, 'header.size'),
    cryptMethod: readU32(bytes, O.CRYPT_METHOD),
    l1Size: readU32(bytes, O.L1_SIZE),
    l1TableOffset: readU64(bytes, O.L1_TABLE_OFFSET, 'header.l1_table_offset'),
    refcountTableOffset: readU64(bytes, O.REFCOUNT_TABLE_OFFSET, 'header.refcount_table_offset'),
    refcountTableClusters: readU32(bytes, O.REFCOUNT_TABLE_CLUSTERS),
    nbSnapshots: readU32(bytes, O.NB_SNAPSHOTS),
    snapshotsOffset: readU64(bytes, O.SNAPSHOTS_OFFSET, 'header.snapshots_offset'),
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: V2_REFCOUNT_ORDER,
    headerLength,
    compressionType: CompressionType.DEFLATE,
    trailingBytes: new Uint8Array(0),
  };
  if (version >= 3) {
    header.incompatibleFeatures = readU64Big(bytes, O.INCOMPATIBLE_FEATURES);
    header.compatibleFeatures = readU64Big(bytes, O.COMPATIBLE_FEATURES);
    header.autoclearFeatures = readU64Big(bytes, O.AUTOCLEAR_FEATURES);
    header.refcountOrder = readU32(bytes, O.REFCOUNT_ORDER);
    if (headerLength > O.COMPRESSION_TYPE) {
      header.compressionType = bytes[O.COMPRESSION_TYPE]!;
      header.trailingBytes = bytes.slice(O.AFTER_COMPRESSION_TYPE, headerLength);
    }
  }
  const unknown = header.incompatibleFeatures & ~KNOWN_INCOMPATIBLE_FEATURES;
  if (unknown !== 0n) {
    throw problem(
      'decode',
      'header.incompatible_features',
      `unknown incompatible feature(s) ${describeBits(unknown, featureNamesForError(bytes, header))}`,
      true,
    );
  }
  validateHeader(header, 'decode', fileSize);
  return header;
}

/**
 * Encodes a header: returns a new buffer of exactly `headerLength` bytes (72 for version 2),
 * to be written at file offset 0 and followed by the header extensions.
 *
 * @throws InvalidArgumentError when the header is not one `decodeHeader` would accept.
 */
export function encodeHeader(header: Qcow2Header): Uint8Array {
  validateHeader(header, 'encode');
  const bytes = new Uint8Array(header.headerLength);
  writeU32(bytes, O.MAGIC, QCOW2_MAGIC);
  writeU32(bytes, O.VERSION, header.version);
  writeU64(bytes, O.BACKING_FILE_OFFSET, header.backingFileOffset);
  writeU32(bytes, O.BACKING_FILE_SIZE, header.backingFileSize);
  writeU32(bytes, O.CLUSTER_BITS, header.clusterBits);
  writeU64(bytes, O.SIZE, header.size);
  writeU32(bytes, O.CRYPT_METHOD, header.cryptMethod);
  writeU32(bytes, O.L1_SIZE, header.l1Size);
  writeU64(bytes, O.L1_TABLE_OFFSET, header.l1TableOffset);
  writeU64(bytes, O.REFCOUNT_TABLE_OFFSET, header.refcountTableOffset);
  writeU32(bytes, O.REFCOUNT_TABLE_CLUSTERS, header.refcountTableClusters);
  writeU32(bytes, O.NB_SNAPSHOTS, header.nbSnapshots);
  writeU64(bytes, O.SNAPSHOTS_OFFSET, header.snapshotsOffset);
  if (header.version >= 3) {
    writeU64Big(bytes, O.INCOMPATIBLE_FEATURES, header.incompatibleFeatures);
    writeU64Big(bytes, O.COMPATIBLE_FEATURES, header.compatibleFeatures);
    writeU64Big(bytes, O.AUTOCLEAR_FEATURES, header.autoclearFeatures);
    writeU32(bytes, O.REFCOUNT_ORDER, header.refcountOrder);
    writeU32(bytes, O.HEADER_LENGTH, header.headerLength);
    if (header.headerLength > O.COMPRESSION_TYPE) {
      bytes[O.COMPRESSION_TYPE] = header.compressionType;
      bytes.set(header.trailingBytes, O.AFTER_COMPRESSION_TYPE);
    }
  }
  return bytes;
}

/** The fields {@link newHeader} needs; everything else has a default. */
export type NewHeaderFields = Pick<
  Qcow2Header,
  'clusterBits' | 'size' | 'l1Size' | 'l1TableOffset' | 'refcountTableOffset' | 'refcountTableClusters'
> &
  Partial<Qcow2Header>;

/**
 * A header with QEMU's defaults for what is not given: version 3, `headerLength` 112 with
 * zeroed padding, 16-bit refcounts, no features, no backing file, no snapshots. For version 2,
 * pass `version: 2` (the v3 fields then take their v2 values). Not validated here:
 * `encodeHeader` validates.
 */
export function newHeader(fields: NewHeaderFields): Qcow2Header {
  const version = fields.version ?? 3;
  const headerLength = fields.headerLength ?? (version === 2 ? HEADER_V2_LENGTH : HEADER_V3_LENGTH);
  return {
    version,
    backingFileOffset: 0,
    backingFileSize: 0,
    cryptMethod: CryptMethod.NONE,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: V2_REFCOUNT_ORDER,
    compressionType: CompressionType.DEFLATE,
    trailingBytes: new Uint8Array(Math.max(0, headerLength - O.AFTER_COMPRESSION_TYPE)),
    ...fields,
    headerLength,
  };
}

/** The feature bits of `header` as booleans. */
export function featuresOf(header: Pick<Qcow2Header, 'incompatibleFeatures' | 'compatibleFeatures' | 'autoclearFeatures'>): Qcow2Features {
  const inc = header.incompatibleFeatures;
  return {
    dirty: (inc & IncompatibleFeature.DIRTY) !== 0n,
    corrupt: (inc & IncompatibleFeature.CORRUPT) !== 0n,
    externalDataFile: (inc & IncompatibleFeature.EXTERNAL_DATA_FILE) !== 0n,
    compressionType: (inc & IncompatibleFeature.COMPRESSION_TYPE) !== 0n,
    extendedL2: (inc & IncompatibleFeature.EXTENDED_L2) !== 0n,
    lazyRefcounts: (header.compatibleFeatures & CompatibleFeature.LAZY_REFCOUNTS) !== 0n,
    bitmaps: (header.autoclearFeatures & AutoclearFeature.BITMAPS) !== 0n,
    rawExternalData: (header.autoclearFeatures & AutoclearFeature.RAW_EXTERNAL_DATA) !== 0n,
  };
}
