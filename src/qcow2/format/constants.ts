/**
 * Constants of the qcow2 on-disk format.
 *
 * Every value names the section of QEMU's `docs/interop/qcow2.rst` ("spec") it comes from, or
 * the QEMU source (`block/qcow2.h`, `block/qcow2-bitmap.c`) for the implementation limits that
 * QEMU applies and that we apply too, so that we never write an image QEMU cannot open.
 *
 * Feature masks are `bigint` because they are 64-bit fields; everything else is a `number`.
 */

// ---------------------------------------------------------------------------------------------
// Header (spec "Header")
// ---------------------------------------------------------------------------------------------

/** `QFI\xfb`, bytes 0-3 of every qcow2 image (spec "Header", magic). */
export const QCOW2_MAGIC = 0x514649fb;

/** The versions this codec reads and writes (spec "Header", version: 2 and 3 are valid). */
export const SUPPORTED_VERSIONS: readonly number[] = [2, 3];

/** Length of a version 2 header in bytes (spec "Header": "exactly 72 bytes"). */
export const HEADER_V2_LENGTH = 72;
/** Minimum header_length of a version 3 header (spec "Header": "at least 104 bytes"). */
export const HEADER_V3_MIN_LENGTH = 104;
/** header_length QEMU writes: 104 plus compression_type and its 7 padding bytes (spec "Additional fields"). */
export const HEADER_V3_LENGTH = 112;
/** header_length must be a multiple of this (spec "Header", header_length; "Header padding"). */
export const HEADER_LENGTH_ALIGNMENT = 8;

/** Byte offsets of the header fields (spec "Header" and "Additional fields"). */
export const HeaderOffset = {
  MAGIC: 0,
  VERSION: 4,
  BACKING_FILE_OFFSET: 8,
  BACKING_FILE_SIZE: 16,
  CLUSTER_BITS: 20,
  SIZE: 24,
  CRYPT_METHOD: 32,
  L1_SIZE: 36,
  L1_TABLE_OFFSET: 40,
  REFCOUNT_TABLE_OFFSET: 48,
  REFCOUNT_TABLE_CLUSTERS: 56,
  NB_SNAPSHOTS: 60,
  SNAPSHOTS_OFFSET: 64,
  // version 3 only
  INCOMPATIBLE_FEATURES: 72,
  COMPATIBLE_FEATURES: 80,
  AUTOCLEAR_FEATURES: 88,
  REFCOUNT_ORDER: 96,
  HEADER_LENGTH: 100,
  // additional fields (present when header_length > offset)
  COMPRESSION_TYPE: 104,
  /** First byte after compression_type: padding, then unknown future fields. */
  AFTER_COMPRESSION_TYPE: 105,
} as const;

/** Smallest cluster_bits (spec "Header", cluster_bits: "Must not be less than 9"). */
export const MIN_CLUSTER_BITS = 9;
/** Largest cluster_bits QEMU opens: 2 MiB clusters (spec "Header", cluster_bits note; qcow2.h MAX_CLUSTER_BITS). */
export const MAX_CLUSTER_BITS = 21;
/** Smallest cluster_bits with Extended L2 Entries (spec "Header", cluster_bits note). */
export const MIN_CLUSTER_BITS_EXTENDED_L2 = 14;
/** QEMU's default cluster size (qcow2.h DEFAULT_CLUSTER_SIZE). */
export const DEFAULT_CLUSTER_BITS = 16;

/** crypt_method values (spec "Header", crypt_method). */
export const CryptMethod = {
  NONE: 0,
  AES: 1,
  LUKS: 2,
} as const;

/** compression_type values (spec "Additional fields", compression_type). */
export const CompressionType = {
  /** raw deflate, called "zlib" in QEMU; the only type when the field is absent */
  DEFLATE: 0,
  ZSTD: 1,
} as const;

/** Longest backing file name (spec "Header", backing_file_size: "Must not be longer than 1023 bytes"). */
export const MAX_BACKING_FILE_NAME = 1023;

/** Largest refcount_order: 64-bit refcounts (spec "Header", refcount_order: "may not exceed 6"). */
export const MAX_REFCOUNT_ORDER = 6;
/** refcount_order of every version 2 image (spec "Header", refcount_order). */
export const V2_REFCOUNT_ORDER = 4;
/** QEMU's default refcount_order (16-bit refcounts). */
export const DEFAULT_REFCOUNT_ORDER = 4;

// ---------------------------------------------------------------------------------------------
// Feature bits (spec "Header", incompatible_features / compatible_features / autoclear_features)
// ---------------------------------------------------------------------------------------------

/** Incompatible feature bits: an implementation must refuse unknown ones. */
export const IncompatibleFeature = {
  /** bit 0: refcounts may be inconsistent; repair before use. */
  DIRTY: 1n << 0n,
  /** bit 1: any structure may be corrupt; no writes except to repair. */
  CORRUPT: 1n << 1n,
  /** bit 2: guest clusters live in an external data file. */
  EXTERNAL_DATA_FILE: 1n << 2n,
  /** bit 3: compression_type is present and non-zero. */
  COMPRESSION_TYPE: 1n << 3n,
  /** bit 4: 128-bit L2 entries with 32 subclusters per cluster. */
  EXTENDED_L2: 1n << 4n,
} as const;
/** Every incompatible bit this codec knows (bits 0-4). */
export const KNOWN_INCOMPATIBLE_FEATURES = 0x1fn;

/** Compatible feature bits: unknown ones may be ignored. */
export const CompatibleFeature = {
  /** bit 0: lazy refcount updates. */
  LAZY_REFCOUNTS: 1n << 0n,
} as const;
/** Every compatible bit this codec knows. */
export const KNOWN_COMPATIBLE_FEATURES = 0x1n;

/** Auto-clear feature bits: a writer must clear unknown ones before writing. */
export const AutoclearFeature = {
  /** bit 0: the bitmaps extension is consistent. */
  BITMAPS: 1n << 0n,
  /** bit 1: the external data file is a consistent raw image. */
  RAW_EXTERNAL_DATA: 1n << 1n,
} as const;
/** Every auto-clear bit this codec knows. */
export const KNOWN_AUTOCLEAR_FEATURES = 0x3n;

/** Feature name table feature types (spec "Feature name table", byte 0). */
export const FeatureType = {
  INCOMPATIBLE: 0,
  COMPATIBLE: 1,
  AUTOCLEAR: 2,
} as const;

// ---------------------------------------------------------------------------------------------
// Header extensions (spec "Header extensions")
// ---------------------------------------------------------------------------------------------

/** Header extension types. */
export const ExtensionType = {
  END: 0x00000000,
  BACKING_FORMAT: 0xe2792aca,
  FEATURE_NAMES: 0x6803f857,
  BITMAPS: 0x23852875,
  ENCRYPTION: 0x0537be77,
  EXTERNAL_DATA_FILE: 0x44415441,
} as const;

/** Type (4) + length (4) in front of every extension's data (spec "Header extensions"). */
export const EXTENSION_HEADER_SIZE = 8;
/** Extension data is padded to a multiple of this (spec "Header extensions"). */
export const EXTENSION_ALIGNMENT = 8;
/** Size of one feature name table entry (spec "Feature name table": bytes 0-47). */
export const FEATURE_NAME_ENTRY_SIZE = 48;
/** Longest feature name (spec "Feature name table": bytes 2-47). */
export const FEATURE_NAME_MAX = 46;
/** Length of the bitmaps extension data (spec "Bitmaps extension": bytes 0-23). */
export const BITMAPS_EXTENSION_SIZE = 24;
/** Length of the full disk encryption header pointer (spec "Full disk encryption header pointer"). */
export const ENCRYPTION_EXTENSION_SIZE = 16;
/**
 * QEMU keeps the backing format name in a 16-byte C string, so it refuses names of 16 bytes or
 * more (block.c `bs->backing_format`; qcow2.c `qcow2_read_extensions`).
 */
export const MAX_BACKING_FORMAT_NAME = 15;

// ---------------------------------------------------------------------------------------------
// L1 and L2 tables (spec "Cluster mapping", "Extended L2 Entries")
// ---------------------------------------------------------------------------------------------

/** Size of an L1 entry, a refcount table entry, a bitmap table entry (spec: 64-bit entries). */
export const TABLE_ENTRY_SIZE = 8;
/** Size of a standard L2 entry (spec "Cluster mapping"). */
export const L2_ENTRY_SIZE = 8;
/** Size of an extended L2 entry (spec "Extended L2 Entries": 128 bits). */
export const EXTENDED_L2_ENTRY_SIZE = 16;
/** Subclusters per cluster with extended L2 entries (spec "Extended L2 Entries"). */
export const SUBCLUSTERS_PER_CLUSTER = 32;

/**
 * 64-bit entry masks, as `[high 32 bits, low 32 bits]`: the codecs test the two halves of an
 * entry as unsigned 32-bit numbers instead of building a bigint per entry.
 */
export const EntryMask = {
  /** bit 63: COPIED, refcount exactly one (spec "Cluster mapping", L1 and L2 entries). */
  COPIED: [0x80000000, 0] as const,
  /** bit 62: compressed cluster (spec "Cluster mapping", L2 entry). */
  COMPRESSED: [0x40000000, 0] as const,
  /** bit 0: reads as zeroes (spec "Standard Cluster Descriptor"). */
  ZERO: [0, 0x00000001] as const,
  /** bits 9-55: cluster-aligned host offset (spec "Cluster mapping"; qcow2.h L1E/L2E_OFFSET_MASK). */
  OFFSET: [0x00ffffff, 0xfffffe00] as const,
  /** reserved bits of an L1 entry: 0-8 and 56-62 (qcow2.h L1E_RESERVED_MASK 0x7f000000000001ff). */
  L1_RESERVED: [0x7f000000, 0x000001ff] as const,
  /** reserved bits of a standard L2 entry: 1-8 and 56-61 (qcow2.h L2E_STD_RESERVED_MASK 0x3f000000000001fe). */
  L2_STANDARD_RESERVED: [0x3f000000, 0x000001fe] as const,
  /** bits 0-61: the cluster descriptor of an L2 entry (spec "Cluster mapping", L2 entry). */
  L2_DESCRIPTOR: [0x3fffffff, 0xffffffff] as const,
  /** reserved bits of a refcount table entry: 0-8 (spec "Host cluster management"; qcow2.h REFT_RESERVED_MASK). */
  REFCOUNT_TABLE_RESERVED: [0, 0x000001ff] as const,
  /** bits 9-63: refcount block offset (spec "Host cluster management"; qcow2.h REFT_OFFSET_MASK). */
  REFCOUNT_TABLE_OFFSET: [0xffffffff, 0xfffffe00] as const,
  /** reserved bits of a bitmap table entry: 1-8 and 56-63 (spec "Bitmap table"). */
  BITMAP_TABLE_RESERVED: [0xff000000, 0x000001fe] as const,
  /** bit 0 of a bitmap table entry with offset 0: the cluster reads as all ones (spec "Bitmap table"). */
  BITMAP_TABLE_ALL_ONES: [0, 0x00000001] as const,
} as const;

/** Highest host offset an L1/L2 entry can hold (qcow2.h QCOW_MAX_CLUSTER_OFFSET, 2^56 - 1). */
export const MAX_HOST_OFFSET_BITS = 56;
/** Compressed data is counted in sectors of this size (spec "Compressed Clusters Descriptor"). */
export const COMPRESSED_SECTOR_SIZE = 512;

// ---------------------------------------------------------------------------------------------
// Refcounts (spec "Host cluster management")
// ---------------------------------------------------------------------------------------------

/** QEMU's largest refcount table: 8 MiB (qcow2.h QCOW_MAX_REFTABLE_SIZE). */
export const MAX_REFCOUNT_TABLE_BYTES = 8 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Active L1 table (spec "Header", size note)
// ---------------------------------------------------------------------------------------------

/** QEMU's largest L1 table: 32 MiB (qcow2.h QCOW_MAX_L1_SIZE; spec "Header", size note). */
export const MAX_L1_TABLE_BYTES = 32 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Snapshots (spec "Snapshots")
// ---------------------------------------------------------------------------------------------

/** Fixed part of a snapshot table entry, before the extra data (spec "Snapshots", bytes 0-39). */
export const SNAPSHOT_HEADER_SIZE = 40;
/** Snapshot table entries are padded to a multiple of this (spec "Snapshots"). */
export const SNAPSHOT_ALIGNMENT = 8;
/** QEMU's largest number of snapshots (qcow2.h QCOW_MAX_SNAPSHOTS). */
export const MAX_SNAPSHOTS = 65536;
/** QEMU's largest snapshot table: 1 KiB per snapshot on average (qcow2.h QCOW_MAX_SNAPSHOTS_SIZE). */
export const MAX_SNAPSHOT_TABLE_BYTES = 1024 * MAX_SNAPSHOTS;
/** QEMU's largest extra data of one snapshot entry (qcow2.h QCOW_MAX_SNAPSHOT_EXTRA_DATA). */
export const MAX_SNAPSHOT_EXTRA_DATA = 1024;
/** Extra data fields (spec "Snapshots": bytes 40-47, 48-55, 56-63 of the entry). */
export const SnapshotExtraField = {
  /** vm_state_size_large: 8 bytes at extra data offset 0. */
  VM_STATE_SIZE_LARGE_END: 8,
  /** disk_size: 8 bytes at extra data offset 8. */
  DISK_SIZE_END: 16,
  /** icount: 8 bytes at extra data offset 16. */
  ICOUNT_END: 24,
} as const;
/** Extra data a version 3 snapshot entry must have: up to disk_size (spec "Snapshots"). */
export const V3_MIN_SNAPSHOT_EXTRA_DATA = SnapshotExtraField.DISK_SIZE_END;
/** Length limit of a snapshot id or name: a 16-bit field (spec "Snapshots", bytes 12-15). */
export const MAX_SNAPSHOT_STRING = 0xffff;

// ---------------------------------------------------------------------------------------------
// Bitmaps (spec "Bitmaps extension", "Bitmap directory", "Bitmap table")
// ---------------------------------------------------------------------------------------------

/** QEMU's largest number of bitmaps (spec "Bitmaps extension" note; qcow2.h QCOW2_MAX_BITMAPS). */
export const MAX_BITMAPS = 65535;
/** QEMU's largest bitmap directory (qcow2.h QCOW2_MAX_BITMAP_DIRECTORY_SIZE). */
export const MAX_BITMAP_DIRECTORY_BYTES = 1024 * MAX_BITMAPS;
/** Fixed part of a bitmap directory entry, before extra data and name (spec "Bitmap directory", bytes 0-23). */
export const BITMAP_ENTRY_HEADER_SIZE = 24;
/** Bitmap directory entries are padded to a multiple of this (spec "Bitmap directory"). */
export const BITMAP_ENTRY_ALIGNMENT = 8;
/** Longest bitmap name QEMU accepts (spec "Bitmap directory", name_size note; qcow2-bitmap.c BME_MAX_NAME_SIZE). */
export const MAX_BITMAP_NAME = 1023;
/** Smallest granularity bits QEMU supports: 512 B (spec "Bitmap directory", granularity_bits note; BME_MIN_GRANULARITY_BITS). */
export const MIN_BITMAP_GRANULARITY_BITS = 9;
/** Largest granularity bits QEMU supports: 2 GiB (spec "Bitmap directory", granularity_bits note; BME_MAX_GRANULARITY_BITS). */
export const MAX_BITMAP_GRANULARITY_BITS = 31;
/** Granularity bits the spec allows at all (spec "Bitmap directory": "Valid values: 0 - 63"). */
export const SPEC_MAX_BITMAP_GRANULARITY_BITS = 63;
/** QEMU's largest bitmap table, in entries (qcow2-bitmap.c BME_MAX_TABLE_SIZE). */
export const MAX_BITMAP_TABLE_ENTRIES = 0x8000000;
/** QEMU's largest bitmap data, in bytes (qcow2-bitmap.c BME_MAX_PHYS_SIZE, 512 MiB). */
export const MAX_BITMAP_DATA_BYTES = 0x20000000;

/** Bitmap directory entry flags (spec "Bitmap directory", flags). */
export const BitmapFlag = {
  /** bit 0: not saved correctly; the bitmap may be inconsistent. */
  IN_USE: 1 << 0,
  /** bit 1: the bitmap is enabled and tracks every write. */
  AUTO: 1 << 1,
  /** bit 2: unknown extra data may be ignored (and must be kept). */
  EXTRA_DATA_COMPATIBLE: 1 << 2,
} as const;
/** Every flag bit the spec defines; bits 3-31 are reserved. */
export const KNOWN_BITMAP_FLAGS = 0x7;

/** Bitmap types (spec "Bitmap directory", type: only 1 is defined). */
export const BitmapType = {
  DIRTY_TRACKING: 1,
} as const;
