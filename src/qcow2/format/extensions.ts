/**
 * The header extension area (spec "Header extensions" and the sections of each type): a list
 * of (type, length, data padded to 8) records after the header, ended by type 0, within the
 * first cluster and before the backing file name.
 *
 * Known extensions are decoded into fields; unknown ones are kept opaquely, in order, so that
 * a rewritten header preserves them (spec: "can be safely ignored").
 */
import {
  BITMAPS_EXTENSION_SIZE,
  BITMAP_ENTRY_ALIGNMENT,
  BITMAP_ENTRY_HEADER_SIZE,
  CryptMethod,
  ENCRYPTION_EXTENSION_SIZE,
  EXTENSION_HEADER_SIZE,
  ExtensionType,
  FEATURE_NAME_ENTRY_SIZE,
  FEATURE_NAME_MAX,
  FeatureType,
  MAX_BACKING_FORMAT_NAME,
  MAX_BITMAPS,
  MAX_BITMAP_DIRECTORY_BYTES,
} from './constants.js';
import {
  SAFE_MAX,
  U32_MAX,
  align8,
  checkInteger,
  decodeUtf8,
  encodeUtf8,
  need,
  readU32,
  readU64,
  writeU32,
  writeU64,
} from './bytes.js';
import { problem } from './errors.js';
import type { Qcow2Header } from './header.js';

/** One entry of the feature name table (spec "Feature name table"). */
export interface FeatureName {
  /** 0 incompatible, 1 compatible, 2 auto-clear (see `FeatureType`). */
  type: number;
  /** Bit number within that feature mask, 0..63. */
  bit: number;
  /** The name, at most 46 bytes of UTF-8, without trailing NUL padding. */
  name: string;
}

/** The bitmaps extension (spec "Bitmaps extension"). */
export interface BitmapsExtension {
  /** Number of bitmaps, 1..65535. */
  nbBitmaps: number;
  /** Size of the bitmap directory in bytes. */
  bitmapDirectorySize: number;
  /** Cluster-aligned offset of the bitmap directory. */
  bitmapDirectoryOffset: number;
}

/** The full disk encryption header pointer (spec "Full disk encryption header pointer"). */
export interface EncryptionExtension {
  /** Cluster-aligned offset of the encryption header. */
  offset: number;
  /** Length of the encryption header in bytes. */
  length: number;
}

/** An extension of a type this codec does not know, kept as it was. */
export interface UnknownExtension {
  /** The 32-bit extension type (never 0 or a known type). */
  type: number;
  /** The extension data, without padding. */
  data: Uint8Array;
}

/** The decoded extension area. Absent fields mean the extension is absent. */
export interface HeaderExtensions {
  /** Backing file format name (type 0xe2792aca), e.g. `qcow2` or `raw`. */
  backingFormat?: string;
  /** Feature name table (type 0x6803f857). */
  featureNames?: FeatureName[];
  /** Bitmaps extension (type 0x23852875). */
  bitmaps?: BitmapsExtension;
  /** Full disk encryption header pointer (type 0x0537be77). */
  encryption?: EncryptionExtension;
  /** External data file name (type 0x44415441). */
  externalDataFile?: string;
  /** Extensions of unknown types, in file order. */
  unknown?: UnknownExtension[];
}

/** The header fields that locate and constrain the extension area. */
export type ExtensionContext = Pick<Qcow2Header, 'headerLength' | 'backingFileOffset' | 'clusterBits' | 'cryptMethod'>;

/**
 * Decodes the header extensions that follow the header.
 *
 * The area starts at `header.headerLength` and ends at the backing file name, or at the end of
 * the first cluster when there is none; the list ends at an extension of type 0 or at the end
 * of the area (as QEMU reads it).
 *
 * @param bytes - the start of the file, at least up to the end marker (pass the first cluster).
 *   Not retained: unknown extension data is copied.
 * @param fileSize - when given, the bitmap directory must lie within the file.
 * @throws Qcow2FormatError for records that run past the area or the bytes given, duplicate
 *   extensions, bad lengths or reserved fields; Qcow2UnsupportedError beyond QEMU's limits.
 */
export function decodeHeaderExtensions(bytes: Uint8Array, header: ExtensionContext, fileSize?: number): HeaderExtensions {
  const clusterSize = 2 ** header.clusterBits;
  const end = header.backingFileOffset !== 0 ? Math.min(header.backingFileOffset, clusterSize) : clusterSize;
  const result: HeaderExtensions = {};
  let offset = header.headerLength;
  for (let index = 0; offset < end; index++) {
    const field = `header_extension[${index}]`;
    if (offset + EXTENSION_HEADER_SIZE > end) {
      throw problem('decode', field, `its type and length at ${offset} run past the end of the extension area at ${end}`);
    }
    need(bytes, offset, EXTENSION_HEADER_SIZE, field);
    const type = readU32(bytes, offset);
    const length = readU32(bytes, offset + 4);
    offset += EXTENSION_HEADER_SIZE;
    if (type === ExtensionType.END) break;
    if (length > end - offset) {
      throw problem('decode', field, `length ${length} at ${offset - 4} runs past the end of the extension area at ${end}`);
    }
    need(bytes, offset, length, field);
    decodeOne(bytes.subarray(offset, offset + length), type, field, header, result, fileSize);
    offset += align8(length);
  }
  return result;
}

function decodeOne(
  data: Uint8Array,
  type: number,
  field: string,
  header: ExtensionContext,
  result: HeaderExtensions,
  fileSize?: number,
): void {
  const duplicate = (): never => {
    throw problem('decode', field, `type 0x${type.toString(16).padStart(8, '0')} appears more than once`);
  };
  switch (type) {
    case ExtensionType.BACKING_FORMAT:
      if (result.backingFormat !== undefined) duplicate();
      if (data.length > MAX_BACKING_FORMAT_NAME) {
        throw problem('decode', `${field}.backing_format`, `length ${data.length} exceeds QEMU's limit of ${MAX_BACKING_FORMAT_NAME}`, true);
      }
      result.backingFormat = decodeUtf8(data, `${field}.backing_format`);
      return;
    case ExtensionType.FEATURE_NAMES:
      if (result.featureNames !== undefined) duplicate();
      result.featureNames = decodeFeatureNames(data, field);
      return;
    case ExtensionType.BITMAPS:
      if (result.bitmaps !== undefined) duplicate();
      result.bitmaps = decodeBitmapsExtension(data, field, header.clusterBits, fileSize);
      return;
    case ExtensionType.ENCRYPTION: {
      if (result.encryption !== undefined) duplicate();
      if (header.cryptMethod !== CryptMethod.LUKS) {
        throw problem('decode', field, 'an encryption header pointer is only allowed with LUKS encryption');
      }
      if (data.length !== ENCRYPTION_EXTENSION_SIZE) {
        throw problem('decode', field, `length ${data.length} is not ${ENCRYPTION_EXTENSION_SIZE}, the size of an encryption header pointer`);
      }
      const offset = readU64(data, 0, `${field}.offset`);
      if (offset % 2 ** header.clusterBits !== 0) throw problem('decode', `${field}.offset`, `${offset} is not cluster-aligned`);
      result.encryption = { offset, length: readU64(data, 8, `${field}.length`) };
      return;
    }
    case ExtensionType.EXTERNAL_DATA_FILE:
      if (result.externalDataFile !== undefined) duplicate();
      result.externalDataFile = decodeUtf8(data, `${field}.external_data_file`);
      return;
    default:
      (result.unknown ??= []).push({ type, data: data.slice() });
  }
}

function decodeFeatureNames(data: Uint8Array, field: string): FeatureName[] {
  if (data.length % FEATURE_NAME_ENTRY_SIZE !== 0) {
    throw problem('decode', field, `feature name table length ${data.length} is not a multiple of ${FEATURE_NAME_ENTRY_SIZE}`);
  }
  const names: FeatureName[] = [];
  for (let at = 0; at < data.length; at += FEATURE_NAME_ENTRY_SIZE) {
    const entryField = `${field}.feature[${at / FEATURE_NAME_ENTRY_SIZE}]`;
    const type = data[at]!;
    const bit = data[at + 1]!;
    if (type > FeatureType.AUTOCLEAR) throw problem('decode', entryField, `type ${type} is not 0, 1 or 2`);
    if (bit > 63) throw problem('decode', entryField, `bit ${bit} is not in 0..63`);
    let nameEnd = at + 2;
    while (nameEnd < at + FEATURE_NAME_ENTRY_SIZE && data[nameEnd] !== 0) nameEnd++;
    names.push({ type, bit, name: decodeUtf8(data.subarray(at + 2, nameEnd), entryField) });
  }
  return names;
}

function decodeBitmapsExtension(data: Uint8Array, field: string, clusterBits: number, fileSize?: number): BitmapsExtension {
  if (data.length !== BITMAPS_EXTENSION_SIZE) {
    throw problem('decode', field, `length ${data.length} is not ${BITMAPS_EXTENSION_SIZE}, the size of the bitmaps extension`);
  }
  const nbBitmaps = readU32(data, 0);
  if (readU32(data, 4) !== 0) throw problem('decode', `${field}.reserved`, `is 0x${readU32(data, 4).toString(16)}, not zero`);
  const ext: BitmapsExtension = {
    nbBitmaps,
    bitmapDirectorySize: readU64(data, 8, `${field}.bitmap_directory_size`),
    bitmapDirectoryOffset: readU64(data, 16, `${field}.bitmap_directory_offset`),
  };
  checkBitmapsExtension('decode', field, ext, clusterBits, fileSize);
  return ext;
}

function checkBitmapsExtension(
  direction: 'decode' | 'encode',
  field: string,
  ext: BitmapsExtension,
  clusterBits: number,
  fileSize?: number,
): void {
  if (direction === 'encode') {
    checkInteger(direction, `${field}.nb_bitmaps`, ext.nbBitmaps, 0, U32_MAX);
    checkInteger(direction, `${field}.bitmap_directory_size`, ext.bitmapDirectorySize, 0, SAFE_MAX);
    checkInteger(direction, `${field}.bitmap_directory_offset`, ext.bitmapDirectoryOffset, 0, SAFE_MAX);
  }
  const { nbBitmaps, bitmapDirectorySize: size, bitmapDirectoryOffset: offset } = ext;
  if (nbBitmaps === 0) throw problem(direction, `${field}.nb_bitmaps`, 'is 0; the extension must list at least one bitmap');
  if (nbBitmaps > MAX_BITMAPS) throw problem(direction, `${field}.nb_bitmaps`, `${nbBitmaps} exceeds QEMU's limit of ${MAX_BITMAPS}`, true);
  if (size > MAX_BITMAP_DIRECTORY_BYTES) {
    throw problem(direction, `${field}.bitmap_directory_size`, `${size} exceeds QEMU's limit of ${MAX_BITMAP_DIRECTORY_BYTES}`, true);
  }
  // The smallest entry: its fixed part plus a one-byte name, padded.
  const minEntry = align8(BITMAP_ENTRY_HEADER_SIZE + 1);
  if (size < nbBitmaps * minEntry || size % BITMAP_ENTRY_ALIGNMENT !== 0) {
    throw problem(direction, `${field}.bitmap_directory_size`, `${size} cannot hold ${nbBitmaps} padded directory entries`);
  }
  if (offset === 0 || offset % 2 ** clusterBits !== 0) {
    throw problem(direction, `${field}.bitmap_directory_offset`, `${offset} is not a non-zero multiple of the cluster size ${2 ** clusterBits}`);
  }
  if (fileSize !== undefined && offset + size > fileSize) {
    throw problem(direction, `${field}.bitmap_directory_offset`, `the directory at ${offset} (${size} bytes) runs past the end of the ${fileSize}-byte file`);
  }
}

/**
 * Encodes the extension area: every present extension in QEMU's order (encryption, backing
 * format, external data file, feature names, bitmaps, unknown ones in order), then the end
 * marker. Returns a new buffer whose length is a multiple of 8, to be written right after the
 * header.
 *
 * @param clusterBits - the image's cluster bits, for the alignment of the offsets.
 * @throws InvalidArgumentError for values `decodeHeaderExtensions` would refuse.
 */
export function encodeHeaderExtensions(extensions: HeaderExtensions, clusterBits: number): Uint8Array {
  const records: Array<[number, Uint8Array]> = [];
  const { encryption, backingFormat, externalDataFile, featureNames, bitmaps, unknown } = extensions;
  if (encryption !== undefined) {
    checkInteger('encode', 'encryption.offset', encryption.offset, 0, SAFE_MAX);
    checkInteger('encode', 'encryption.length', encryption.length, 0, SAFE_MAX);
    if (encryption.offset % 2 ** clusterBits !== 0) throw problem('encode', 'encryption.offset', `${encryption.offset} is not cluster-aligned`);
    const data = new Uint8Array(ENCRYPTION_EXTENSION_SIZE);
    writeU64(data, 0, encryption.offset);
    writeU64(data, 8, encryption.length);
    records.push([ExtensionType.ENCRYPTION, data]);
  }
  if (backingFormat !== undefined) {
    const data = encodeUtf8(backingFormat);
    if (data.length > MAX_BACKING_FORMAT_NAME) {
      throw problem('encode', 'backing_format', `'${backingFormat}' is longer than QEMU's limit of ${MAX_BACKING_FORMAT_NAME} bytes`);
    }
    records.push([ExtensionType.BACKING_FORMAT, data]);
  }
  if (externalDataFile !== undefined) records.push([ExtensionType.EXTERNAL_DATA_FILE, encodeUtf8(externalDataFile)]);
  if (featureNames !== undefined) records.push([ExtensionType.FEATURE_NAMES, encodeFeatureNames(featureNames)]);
  if (bitmaps !== undefined) {
    checkBitmapsExtension('encode', 'bitmaps', bitmaps, clusterBits);
    const data = new Uint8Array(BITMAPS_EXTENSION_SIZE);
    writeU32(data, 0, bitmaps.nbBitmaps);
    writeU64(data, 8, bitmaps.bitmapDirectorySize);
    writeU64(data, 16, bitmaps.bitmapDirectoryOffset);
    records.push([ExtensionType.BITMAPS, data]);
  }
  const known = new Set<number>(Object.values(ExtensionType));
  for (const [i, ext] of (unknown ?? []).entries()) {
    checkInteger('encode', `unknown[${i}].type`, ext.type, 0, U32_MAX);
    if (known.has(ext.type)) throw problem('encode', `unknown[${i}].type`, `0x${ext.type.toString(16)} is a known extension type or the end marker`);
    records.push([ext.type, ext.data]);
  }

  let total = EXTENSION_HEADER_SIZE; // the end marker
  for (const [, data] of records) total += EXTENSION_HEADER_SIZE + align8(data.length);
  const out = new Uint8Array(total);
  let at = 0;
  for (const [type, data] of records) {
    writeU32(out, at, type);
    writeU32(out, at + 4, data.length);
    out.set(data, at + EXTENSION_HEADER_SIZE);
    at += EXTENSION_HEADER_SIZE + align8(data.length);
  }
  return out; // the end marker is the zeroed last 8 bytes
}

function encodeFeatureNames(features: readonly FeatureName[]): Uint8Array {
  const out = new Uint8Array(features.length * FEATURE_NAME_ENTRY_SIZE);
  for (const [i, f] of features.entries()) {
    const field = `feature_names[${i}]`;
    checkInteger('encode', `${field}.type`, f.type, 0, FeatureType.AUTOCLEAR);
    checkInteger('encode', `${field}.bit`, f.bit, 0, 63);
    const name = encodeUtf8(f.name);
    if (name.length > FEATURE_NAME_MAX) throw problem('encode', `${field}.name`, `'${f.name}' is longer than ${FEATURE_NAME_MAX} bytes`);
    if (name.includes(0)) throw problem('encode', `${field}.name`, 'contains a NUL byte');
    const at = i * FEATURE_NAME_ENTRY_SIZE;
    out[at] = f.type;
    out[at + 1] = f.bit;
    out.set(name, at + 2);
  }
  return out;
}

/**
 * The names the feature name table gives to incompatible feature bits, for an error message
 * about unknown bits. Best effort: returns an empty map when the table cannot be read.
 * @internal
 */
export function featureNamesForError(bytes: Uint8Array, header: ExtensionContext): Map<number, string> {
  const names = new Map<number, string>();
  try {
    const ext = decodeHeaderExtensions(bytes, { ...header, cryptMethod: CryptMethod.LUKS });
    for (const f of ext.featureNames ?? []) if (f.type === FeatureType.INCOMPATIBLE) names.set(f.bit, f.name);
  } catch {
    // The names only decorate the message; a broken table leaves them out.
  }
  return names;
}
