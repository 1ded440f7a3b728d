/** The `package` text bitback's QMP server reports: `bitback VERSION` from package.json. */
import { readFileSync } from 'node:fs';

let cached: string | undefined;

/** `bitback 0.1.0`, or `bitback` when package.json cannot be read. Read once. */
export function bitbackPackage(): string {
  if (cached !== undefined) return cached;
  try {
    // This file is dist/src/qmp/server/package-version.js; package.json is at the top.
    const pkg = JSON.parse(readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    cached = typeof pkg.version === 'string' ? `bitback ${pkg.version}` : 'bitback';
  } catch {
    cached = 'bitback';
  }
  return cached;
}
