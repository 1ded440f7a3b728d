/**
 * An export as the server keeps it: checked once when added, with what negotiation and
 * transmission need to know about it (read-only, contexts, transmission flags).
 */
import { BitmapStateError } from '../../bitmap/index.js';
import { InvalidArgumentError } from '../../errors.js';
import {
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_MAX_STRING,
} from '../protocol/index.js';
import { KnownData } from './known-data.js';
import { exportContexts, type MetaContext } from './meta-contexts.js';
import { type NbdExport } from './types.js';

/** An export the server serves. */
export interface ServedExport {
  readonly spec: NbdExport;
  readonly name: string;
  readonly readOnly: boolean;
  readonly contexts: readonly MetaContext[];
  /** Ranges lately reported as data, shared by the export's connections (see known-data.ts). */
  readonly knownData: KnownData;
}

const ENCODER = new TextEncoder();

/**
 * Checks `spec` and derives what the server needs.
 * @throws InvalidArgumentError for a malformed export; BitmapStateError for an inconsistent bitmap
 */
export function makeServedExport(spec: NbdExport): ServedExport {
  const action = `add NBD export '${String(spec.name)}'`;
  checkString(action, 'name', spec.name);
  if (spec.description !== undefined) checkString(action, 'description', spec.description);
  const device = spec.device;
  if (device === null || typeof device !== 'object' || !Number.isSafeInteger(device.size)) {
    throw new InvalidArgumentError(action, 'its device is not a BlockDevice');
  }
  const bitmaps = spec.bitmaps ?? [];
  const names = new Set<string>();
  for (const bitmap of bitmaps) {
    if (bitmap.name === undefined) throw new InvalidArgumentError(action, 'an anonymous bitmap cannot be exported');
    if (names.has(bitmap.name)) throw new InvalidArgumentError(action, `bitmap '${bitmap.name}' is given twice`);
    names.add(bitmap.name);
    // An inconsistent bitmap (left in use by a process that died) means nothing: QEMU refuses it too.
    if (bitmap.inconsistent) throw new BitmapStateError(action, `Bitmap '${bitmap.name}' is inconsistent and cannot be used`);
    if (bitmap.size !== device.size) {
      throw new InvalidArgumentError(action, `bitmap '${bitmap.name}' covers ${bitmap.size} bytes, the device ${device.size}`);
    }
    checkString(action, 'context name', `qemu:dirty-bitmap:${bitmap.name}`);
  }
  return {
    spec,
    name: spec.name,
    readOnly: device.capabilities.readOnly || spec.readOnly === true,
    contexts: exportContexts(bitmaps, spec.allocationDepth ?? true),
    knownData: new KnownData(),
  };
}

/** A string the protocol can carry (proto.md "Conventions": UTF-8, no NUL, at most 4096 bytes). */
function checkString(action: string, what: string, value: unknown): void {
  if (typeof value !== 'string') throw new InvalidArgumentError(action, `its ${what} is not a string`);
  if (value.includes('\0')) throw new InvalidArgumentError(action, `its ${what} contains a NUL character`);
  if (ENCODER.encode(value).length > NBD_MAX_STRING) throw new InvalidArgumentError(action, `its ${what} is longer than ${NBD_MAX_STRING} bytes`);
}

/**
 * The transmission flags of an export for a connection (proto.md "Transmission flags"). DF only
 * with structured replies (the spec says to leave it clear otherwise); CAN_MULTI_CONN when the
 * device shares its cache among users or the export cannot change.
 */
export function transmissionFlags(exp: ServedExport, structured: boolean): number {
  let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;
  if (structured) flags |= NBD_FLAG_SEND_DF;
  if (exp.readOnly) flags |= NBD_FLAG_READ_ONLY;
  else flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
  if (exp.readOnly || exp.spec.device.capabilities.multiConn) flags |= NBD_FLAG_CAN_MULTI_CONN;
  return flags;
}

/** Preferred block size to announce: the device's, within [512, 2 MiB] and the maximum payload. */
export function preferredBlockSize(exp: ServedExport, maxPayload: number): number {
  const preferred = exp.spec.device.blockSize?.preferred ?? 4096;
  const clamped = Math.min(2 * 1024 * 1024, Math.max(512, Number.isSafeInteger(preferred) ? preferred : 4096));
  // A power of two is required (proto.md "Block size constraints"); round down to one.
  let power = 512;
  while (power * 2 <= clamped && power * 2 <= maxPayload) power *= 2;
  return power;
}
