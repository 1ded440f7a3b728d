/**
 * Finding the real peers (qemu-img, qemu-nbd, qemu-io, qemu-system-x86_64, nbdinfo, nbdcopy,
 * nbdkit) that end-to-end tests run against.
 *
 * Outside CI a missing peer skips the test that needs it, saying which. Under `CI=true` a missing
 * peer is a failure, never a skip: CI installs every peer, so its absence is a defect.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** The names of the peer programs tests may ask for. */
export type Peer =
  | 'qemu-img'
  | 'qemu-io'
  | 'qemu-nbd'
  | 'qemu-system-x86_64'
  | 'nbdinfo'
  | 'nbdcopy'
  | 'nbdkit';

/** Absolute path of `program` on `$PATH`, or undefined. */
export function which(program: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, program);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** True when running under CI (`CI=true`), where missing peers fail instead of skipping. */
export const inCI = process.env.CI === 'true';

/**
 * Returns the `skip` option for a `node:test` test that needs `peers`: `false` when all are
 * present, a reason string when one is missing outside CI. Under CI a missing peer throws, so the
 * test file fails loudly.
 *
 * @example test('qemu-img reads it', { skip: needPeers('qemu-img') }, async () => { ... })
 */
export function needPeers(...peers: Peer[]): false | string {
  const missing = peers.filter((p) => which(p) === undefined);
  if (missing.length === 0) return false;
  const reason = `peer(s) not installed: ${missing.join(', ')} (make test installs them)`;
  if (inCI) throw new Error(`CI=true and ${reason}`);
  return reason;
}
