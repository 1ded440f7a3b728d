/**
 * How snapshots are shown: `qemu-img snapshot -l`'s table (QEMU `bdrv_snapshot_dump`) and the
 * `snapshots` objects of `qemu-img info --output=json`.
 */
import type { SnapshotInfo } from '../info.js';
import type { Qcow2Snapshot } from './snapshots.js';

/** The fields and field order of one `qemu-img info --output=json` snapshot (icount only when on). */
export function snapshotInfo(s: Qcow2Snapshot): SnapshotInfo {
  return {
    ...(s.icount === undefined ? {} : { icount: Number(s.icount) }),
    'vm-clock-nsec': Number(s.vmClockNanoseconds % 1_000_000_000n),
    name: s.name,
    'date-sec': s.dateSeconds,
    'date-nsec': s.dateNanoseconds,
    'vm-clock-sec': Number(s.vmClockNanoseconds / 1_000_000_000n),
    id: s.id,
    'vm-state-size': s.vmStateSize,
  };
}

/**
 * The lines `qemu-img snapshot -l` prints: `Snapshot list:`, the column header, one line per
 * snapshot (date in local time, as QEMU prints it); no lines at all without snapshots.
 */
export function formatSnapshotTable(snapshots: readonly Qcow2Snapshot[]): string[] {
  if (snapshots.length === 0) return [];
  // QEMU: "%-10s%-17s%8s%20s%13s%11s" for the header, "%-9s %-16s %8s%20s%13s%11s" per snapshot.
  const lines = ['Snapshot list:', `${'ID'.padEnd(10)}${'TAG'.padEnd(17)}${'VM SIZE'.padStart(8)}${'DATE'.padStart(20)}${'VM CLOCK'.padStart(13)}${'ICOUNT'.padStart(11)}`];
  for (const s of snapshots) {
    const icount = s.icount === undefined ? '' : String(s.icount);
    lines.push(`${s.id.padEnd(9)} ${s.name.padEnd(16)} ${sizeToStr(s.vmStateSize).padStart(8)}${localDate(s.dateSeconds).padStart(20)}${vmClock(s.vmClockNanoseconds).padStart(13)}${icount.padStart(11)}`);
  }
  return lines;
}

/** QEMU's `size_to_str`: three significant digits and a binary unit ("0 B", "1.5 MiB"). */
export function sizeToStr(bytes: number): string {
  const suffixes = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];
  const x = bytes / (1000 / 1024);
  const exponent = x === 0 ? 0 : Math.floor(Math.log2(x)) + 1; // frexp's exponent
  const i = Math.min(suffixes.length - 1, Math.trunc((exponent - 1) / 10));
  let text = (bytes / 2 ** (i * 10)).toPrecision(3);
  if (text.includes('.')) text = text.replace(/0+$/, '').replace(/\.$/, '');
  return `${text} ${suffixes[i]}B`;
}

/** `%Y-%m-%d %H:%M:%S` in local time. */
function localDate(seconds: number): string {
  const d = new Date(seconds * 1000);
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** `%02d:%02d:%02d.%03d`: hours, minutes, seconds, milliseconds of the VM clock. */
function vmClock(nanoseconds: bigint): string {
  const secs = nanoseconds / 1_000_000_000n;
  const ms = (nanoseconds / 1_000_000n) % 1000n;
  const two = (n: bigint): string => String(n).padStart(2, '0');
  return `${two(secs / 3600n)}:${two((secs / 60n) % 60n)}:${two(secs % 60n)}.${String(ms).padStart(3, '0')}`;
}
