/**
 * The native addon (native/bitback_native.c, built by `npm install`): system calls Node.js does
 * not offer. Optional: when it was not built, {@link nativeAddon} returns undefined and callers
 * fall back to slower pure-JavaScript ways (bitback says so where it matters).
 */
import { createRequire } from 'node:module';

/** The functions the addon exports. */
export interface NativeAddon {
  /** lseek(fd, offset, SEEK_DATA): the next data offset at or after `offset`, or -1 when there is none. */
  seekData(fd: number, offset: number): number;
  /** lseek(fd, offset, SEEK_HOLE): the next hole at or after `offset` (the end of the file counts as one). */
  seekHole(fd: number, offset: number): number;
}

let loaded: NativeAddon | null | undefined;

/** The addon, or undefined when it is not built (or `BITBACK_NO_NATIVE=1` disables it). */
export function nativeAddon(): NativeAddon | undefined {
  if (loaded === undefined) {
    loaded = null;
    if (process.env.BITBACK_NO_NATIVE !== '1') {
      try {
        // dist/src/block/native.js -> build/Release at the package root.
        loaded = createRequire(import.meta.url)('../../../build/Release/bitback_native.node') as NativeAddon;
      } catch {
        loaded = null;
      }
    }
  }
  return loaded ?? undefined;
}
