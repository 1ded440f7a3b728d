/**
 * One figure printed by a benchmark. `peer` and `ratio` are set when the same work was measured
 * on a real peer (qemu-img, qemu-nbd, nbdcopy) in the same run: ratio = ours / peer (lower is
 * better for times, so a goal reads "ratio <= 1.0").
 */
export interface BenchResult {
  /** What was measured ("iterate dirty extents, 16 Mi granules, 1% dirty"). */
  name: string;
  /** Our figure. */
  value: number;
  /** Unit of `value` and `peer` ("ms", "MiB/s", "IOPS", "MiB"). */
  unit: string;
  /** The goal as text ("< 20 ms", "ratio <= 1.1"). */
  goal?: string;
  /** The peer's figure in the same run, when there is one. */
  peer?: number;
  /** Name of the peer ("qemu-img convert"). */
  peerName?: string;
  /** ours / peer. */
  ratio?: number;
  /** Whether the goal was met, when it can be judged. */
  met?: boolean;
}

/** Formats results as an aligned text table. */
export function formatResults(title: string, results: BenchResult[]): string {
  const rows = results.map((r) => [
    r.name,
    `${fmt(r.value)} ${r.unit}`,
    r.peer !== undefined ? `${fmt(r.peer)} ${r.unit} (${r.peerName ?? 'peer'})` : '',
    r.ratio !== undefined ? r.ratio.toFixed(2) : '',
    r.goal ?? '',
    r.met === undefined ? '' : r.met ? 'met' : 'MISSED',
  ]);
  const header = ['benchmark', 'bitback', 'peer', 'ratio', 'goal', ''];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] as string).length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd();
  return [`== ${title}`, line(header), ...rows.map(line)].join('\n');
}

function fmt(n: number): string {
  return Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 1 ? n.toFixed(2) : n.toPrecision(3);
}
