/**
 * Test-only: what the corpus and the fuzzer accept from `checkQcow2` on a damaged image — a
 * result whose findings are well formed, or a typed error naming the image and the field —
 * and the same discipline for the format codecs' decoders.
 */
import assert from 'node:assert/strict';
import { BitbackError } from '../../../errors.js';
import {
  Qcow2FormatError,
  Qcow2UnsupportedError,
  decodeBitmapDirectory,
  decodeImageHeader,
  decodeL1Table,
  decodeRefcountTable,
  decodeSnapshotTable,
  featuresOf,
  geometryOf,
} from '../../format/index.js';
import { Qcow2CheckError } from '../errors.js';
import { checkQcow2, type Qcow2CheckOptions } from '../check.js';
import { severityOf } from '../findings.js';
import type { Qcow2CheckResult } from '../result.js';

/** What a check of a damaged image gave. */
export type CheckOutcome = { result: Qcow2CheckResult } | { error: BitbackError };

/**
 * Checks `path` and asserts the outcome is acceptable: a result with consistent findings, or a
 * `BitbackError` (a `Qcow2CheckError` must name `path` and a field). Anything else fails.
 */
export async function checkTyped(path: string, options?: Qcow2CheckOptions): Promise<CheckOutcome> {
  let result: Qcow2CheckResult;
  try {
    result = await checkQcow2(path, options);
  } catch (e) {
    assert.ok(e instanceof BitbackError, `not a BitbackError: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    assert.match(e.message, /^Cannot \S/);
    if (e instanceof Qcow2CheckError) {
      assert.equal(e.path, path);
      assert.ok(e.field.length > 0, 'the error names a field');
      assert.ok(e.message.includes(path) && e.message.includes(e.field), `the message names the image and the field: ${e.message}`);
    }
    return { error: e };
  }
  for (const f of result.findings) {
    assert.ok(f.field.length > 0 && f.message.length > 0, `finding without field or message: ${JSON.stringify(f)}`);
    assert.equal(f.severity, severityOf(f.kind));
  }
  const counted = result.leaks + result.corruptions + result['check-errors'] + result['leaks-fixed'] + result['corruptions-fixed'];
  assert.equal(counted === 0, result.findings.length === 0 && result['findings-omitted'] === 0, 'findings are counted and counts have findings');
  return { result };
}

/**
 * Runs the format codecs' decoders over an image's bytes (header, refcount table, L1 table,
 * snapshot table, bitmap directory, each against the file size) and asserts that each one
 * either decodes or throws a Qcow2FormatError / Qcow2UnsupportedError naming a field.
 */
export function decodeAllTyped(bytes: Uint8Array): void {
  const typed = (fn: () => unknown): boolean => {
    try {
      fn();
      return true;
    } catch (e) {
      assert.ok(e instanceof Qcow2FormatError || e instanceof Qcow2UnsupportedError, `codec threw ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      assert.ok(e.field.length > 0 && e.message.includes(e.field));
      return false;
    }
  };
  let image: ReturnType<typeof decodeImageHeader> | undefined;
  if (!typed(() => (image = decodeImageHeader(bytes, bytes.length))) || image === undefined) return;
  const { header, extensions } = image;
  const g = geometryOf(header);
  typed(() => decodeRefcountTable(bytes, header.refcountTableOffset, (header.refcountTableClusters * g.clusterSize) / 8, g, bytes.length));
  typed(() => decodeL1Table(bytes, header.l1TableOffset, header.l1Size, g, bytes.length));
  typed(() => decodeSnapshotTable(bytes, header.snapshotsOffset, header.nbSnapshots, g, bytes.length));
  const bitmaps = extensions.bitmaps;
  if (bitmaps !== undefined && featuresOf(header).bitmaps) {
    typed(() => decodeBitmapDirectory(bytes, bitmaps.bitmapDirectoryOffset, bitmaps, { geometry: g, virtualSize: header.size }, bytes.length));
  }
}
