/**
 * `bitback image check [--json] [-r leaks|all] [-U] FILE`: qemu-img check for qcow2. Exit statuses
 * are qemu-img's: 0 clean, 1 the check itself failed, 2 corruptions, 3 leaks only; an image in
 * use by another process is refused (exit 6) unless -U (read-only checks only, as qemu-img).
 */
import { parseArgs } from 'node:util';
import { checkQcow2, formatQcow2CheckHuman, qcow2CheckExitStatus } from '../qcow2/check/index.js';
import { probeImageFormat } from '../qcow2/info.js';
import { UsageError } from './usage-error.js';

/** Runs the check subcommand. */
export async function checkCommand(argv: string[], out: (line: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      json: { type: 'boolean' },
      output: { type: 'string' },
      repair: { type: 'string', short: 'r' },
      format: { type: 'string', short: 'f' },
      quiet: { type: 'boolean', short: 'q' },
      'force-share': { type: 'boolean', short: 'U' },
    },
    allowPositionals: true,
  });
  if (positionals.length !== 1) throw new UsageError('image check', 'expected exactly one FILE');
  const repair = values.repair;
  if (repair !== undefined && repair !== 'leaks' && repair !== 'all') throw new UsageError('image check', `-r ${repair}: expected leaks or all`);
  const file = positionals[0] as string;
  const format = values.format ?? (await probeImageFormat(file));
  if (format !== 'qcow2') {
    // As qemu-img: raw images have no metadata to check.
    out(`This image format does not support checks`);
    return 63;
  }
  const forceShare = values['force-share'] === true;
  if (forceShare && repair !== undefined) throw new UsageError('image check', '-U cannot be used with -r: force-share=on can only be used with read-only images');
  const result = await checkQcow2(file, { ...(repair === undefined ? {} : { repair }), ...(forceShare ? { lock: { forceShare } } : {}) });
  if (values.json || values.output === 'json') {
    const { findings: _f, 'findings-omitted': _o, ...report } = result;
    // qemu-img leaves out the counters that are zero.
    const optional = ['allocated-clusters', 'leaks', 'corruptions', 'leaks-fixed', 'corruptions-fixed', 'fragmented-clusters', 'compressed-clusters'];
    const shown = Object.fromEntries(Object.entries(report).filter(([k, v]) => !(optional.includes(k) && v === 0)));
    out(JSON.stringify(shown, null, 4));
  } else if (!values.quiet) {
    out(formatQcow2CheckHuman(result));
  }
  return qcow2CheckExitStatus(result);
}
