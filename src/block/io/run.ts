/**
 * Executes `bitback io` commands ({@link IoCommand}) against any `BlockDevice`, printing what
 * qemu-io prints (`wrote 65536/65536 bytes at offset 1048576`, timing, `map` lines).
 *
 * Large requests are split into chunks of at most {@link IO_CHUNK} bytes so that `read -P 0x5a 0 4G`
 * runs in bounded memory.
 */
import { VerifyError } from '../../errors.js';
import { ExtentFlags, type BlockDevice } from '../block-device.js';
import { type IoCommand } from './commands.js';
import { formatIoSize } from './size.js';

/** Largest buffer one command step reads or writes, in bytes. */
export const IO_CHUNK = 4 * 1024 * 1024;

/** Where command output goes (one line per call, without the newline). */
export type IoOutput = (line: string) => void;

/**
 * Runs one command. Resolves when it is done; rejects with a `VerifyError` when `read -P` finds a
 * byte that differs from the pattern (the message gives the first differing offset and how many
 * bytes of the request differ), or with the device's error.
 */
export async function runIoCommand(device: BlockDevice, command: IoCommand, out: IoOutput): Promise<void> {
  switch (command.kind) {
    case 'read':
      return runRead(device, command, out);
    case 'write':
      return runWrite(device, command, out);
    case 'discard': {
      const started = performance.now();
      await device.trim(command.offset, command.length);
      if (!command.quiet) report(out, 'discard', command.offset, command.length, started);
      return;
    }
    case 'flush':
      await device.flush();
      return;
    case 'length':
      out(formatIoSize(device.size));
      return;
    case 'map':
      return runMap(device, out);
    default: {
      const unreachable: never = command;
      throw new Error(`unhandled io command ${JSON.stringify(unreachable)}`);
    }
  }
}

async function runRead(
  device: BlockDevice,
  command: Extract<IoCommand, { kind: 'read' }>,
  out: IoOutput,
): Promise<void> {
  const started = performance.now();
  let firstBad = -1;
  let badCount = 0;
  let firstBadValue = 0;
  for (let done = 0; done < command.length; ) {
    const n = Math.min(IO_CHUNK, command.length - done);
    const data = await device.read(command.offset + done, n);
    if (command.pattern !== undefined) {
      for (let i = 0; i < n; i++) {
        if (data[i] !== command.pattern) {
          if (firstBad < 0) {
            firstBad = command.offset + done + i;
            firstBadValue = data[i] as number;
          }
          badCount++;
        }
      }
    }
    if (command.dump) dump(out, command.offset + done, data);
    done += n;
  }
  if (firstBad >= 0) {
    throw new VerifyError(
      `verify read of ${command.length} bytes at offset ${command.offset}`,
      `pattern 0x${hex2(command.pattern as number)} expected, but the byte at offset ${firstBad} is ` +
        `0x${hex2(firstBadValue)} (${badCount} of ${command.length} bytes differ)`,
    );
  }
  if (!command.quiet) report(out, 'read', command.offset, command.length, started);
}

async function runWrite(
  device: BlockDevice,
  command: Extract<IoCommand, { kind: 'write' }>,
  out: IoOutput,
): Promise<void> {
  const started = performance.now();
  if (command.zero) {
    await device.writeZeroes(command.offset, command.length, { mayTrim: command.mayTrim, fua: command.fua });
  } else {
    const chunk = new Uint8Array(Math.min(IO_CHUNK, command.length)).fill(command.pattern);
    for (let done = 0; done < command.length; ) {
      const n = Math.min(chunk.length, command.length - done);
      await device.write(command.offset + done, n === chunk.length ? chunk : chunk.subarray(0, n), {
        fua: command.fua,
      });
      done += n;
    }
  }
  if (!command.quiet) report(out, 'wrote', command.offset, command.length, started);
}

/** Prints the allocation map: one line per run of allocated / unallocated bytes, as qemu-io's `map`. */
async function runMap(device: BlockDevice, out: IoOutput): Promise<void> {
  let runStart = 0;
  let runAllocated: boolean | undefined;
  const flushRun = (end: number): void => {
    if (runAllocated === undefined || end === runStart) return;
    const length = end - runStart;
    out(
      `${formatIoSize(length)} (0x${length.toString(16)}) bytes ${runAllocated ? '    allocated' : 'not allocated'} ` +
        `at offset ${formatIoSize(runStart)} (0x${runStart.toString(16)})`,
    );
  };
  for (let offset = 0; offset < device.size; ) {
    const extents = await device.blockStatus(offset, device.size - offset);
    for (const extent of extents) {
      const allocated = (extent.flags & ExtentFlags.HOLE) === 0;
      if (allocated !== runAllocated) {
        flushRun(extent.offset);
        runStart = extent.offset;
        runAllocated = allocated;
      }
      offset = extent.offset + extent.length;
    }
  }
  flushRun(device.size);
}

function report(out: IoOutput, verb: string, offset: number, length: number, started: number): void {
  const seconds = (performance.now() - started) / 1000;
  out(`${verb} ${length}/${length} bytes at offset ${offset}`);
  const rate = seconds > 0 ? length / seconds : 0;
  out(
    `${formatIoSize(length)}, 1 ops; ${seconds.toFixed(4)} sec (${formatIoSize(Math.round(rate))}/sec and ` +
      `${seconds > 0 ? (1 / seconds).toFixed(1) : 'inf'} ops/sec)`,
  );
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/** Hex dump in qemu-io's `-v` layout: offset, 16 bytes, printable characters. */
function dump(out: IoOutput, base: number, data: Uint8Array): void {
  for (let i = 0; i < data.length; i += 16) {
    const row = data.subarray(i, Math.min(i + 16, data.length));
    const bytes = [...row].map(hex2).join(' ');
    const text = [...row].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    out(`${(base + i).toString(16).padStart(8, '0')}:  ${bytes.padEnd(47)}  ${text}`);
  }
}
