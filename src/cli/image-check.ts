/**
 * `bitback image check [--json] [-r leaks|all] FILE`: qemu-img check for qcow2. Exit statuses are
 * qemu-img's: 0 clean, 1 the check itself failed, 2 corruptions, 3 leaks only.
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
  const result = await checkQcow2(file, repair === undefined ? {} : { repair });
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
