/**
 * Who holds a lock byte of a file, for the message of a refused image lock.
 *
 * F_OFD_GETLK reports pid -1 for an open file description lock: the kernel does not tie one to
 * a process. Linux does list the locks of every open file in /proc/PID/fdinfo/FD (`lock:`
 * lines, the format of /proc/locks), so the holders are found by reading those of every process
 * this user may inspect. Classic POSIX locks carry their pid in /proc/locks itself. Best effort:
 * processes of other users stay hidden from a non-root user, and any failure yields no name.
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { type LockHolder } from './image-lock-error.js';

/** One line of /proc/locks or a `lock:` line of /proc/PID/fdinfo/FD. */
export interface ProcLockLine {
  /** POSIX, OFDLCK, FLOCK, LEASE... */
  kind: string;
  mode: 'read' | 'write';
  /** The owner's pid; -1 for OFD locks. */
  pid: number;
  /** `MAJOR:MINOR` of the file system, in hex as the kernel prints it. */
  device: string;
  /** The inode number, in decimal. */
  inode: string;
  /** First and last byte (`end` Infinity for EOF). */
  start: number;
  end: number;
}

/**
 * Parses one lock line (`1: OFDLCK ADVISORY  READ -1 fe:00:2146338 100 101`, optionally after
 * `lock:\t`). Returns undefined for waiters (`1: -> POSIX ...`) and anything unexpected.
 */
export function parseProcLockLine(line: string): ProcLockLine | undefined {
  const fields = line.replace(/^lock:\s*/, '').trim().split(/\s+/);
  if (fields.length < 8 || fields[1] === '->') return undefined;
  const [, kind, , mode, pidText, file, startText, endText] = fields as [string, string, string, string, string, string, string, string];
  const match = /^([0-9a-f]+:[0-9a-f]+):(\d+)$/.exec(file);
  const pid = Number.parseInt(pidText, 10);
  const start = Number(startText);
  const end = endText === 'EOF' ? Infinity : Number(endText);
  if (match === null || (mode !== 'READ' && mode !== 'WRITE') || !Number.isInteger(pid) || !Number.isSafeInteger(start) || Number.isNaN(end)) return undefined;
  return { kind, mode: mode === 'READ' ? 'read' : 'write', pid, device: match[1] as string, inode: match[2] as string, start, end };
}

/**
 * The processes holding a lock that covers `byte` of the file at `path`: from /proc/locks for
 * POSIX locks, from every readable /proc/PID/fdinfo for OFD locks. Never rejects: an empty list
 * means "unknown" (not Linux, no permission, the holder went away).
 */
export async function findLockHolders(path: string, byte: number): Promise<LockHolder[]> {
  if (process.platform !== 'linux') return [];
  try {
    const st = await stat(path, { bigint: true });
    const file = { device: deviceName(st.dev), inode: st.ino.toString() };
    const locks = coveringLocks(file, byte, (await readFile('/proc/locks', 'utf8')).split('\n'));
    const pids = new Set(locks.filter((l) => l.pid > 0).map((l) => l.pid));
    if (locks.some((l) => l.pid <= 0)) for (const pid of await fdinfoHolders(file, byte)) pids.add(pid);
    const holders: LockHolder[] = [];
    for (const pid of [...pids].sort((a, b) => a - b)) {
      const command = await readFile(`/proc/${pid}/comm`, 'utf8').then((t) => t.trim(), () => undefined);
      holders.push({ pid, ...(command ? { command } : {}), self: pid === process.pid });
    }
    return holders;
  } catch {
    return [];
  }
}

interface FileId {
  device: string;
  inode: string;
}

/**
 * The lock lines about `file` that cover `byte`. The device must match too, except when no line
 * matches it: some file systems (btrfs subvolumes) report another device in stat() than in the
 * lock list, and then the inode alone has to do.
 */
function coveringLocks(file: FileId, byte: number, lines: readonly string[]): ProcLockLine[] {
  const covering = lines
    .map(parseProcLockLine)
    .filter((l): l is ProcLockLine => l !== undefined && l.inode === file.inode && l.start <= byte && byte <= l.end);
  const sameDevice = covering.filter((l) => l.device === file.device);
  return sameDevice.length > 0 ? sameDevice : covering;
}

/** Pids whose open files hold a lock covering `byte` of `file`, from /proc/PID/fdinfo. */
async function fdinfoHolders(file: FileId, byte: number): Promise<number[]> {
  const pids = (await readdir('/proc')).filter((name) => /^\d+$/.test(name));
  const found: number[] = [];
  // A few processes at a time: thousands of small reads, on an error path only.
  const PARALLEL = 8;
  for (let i = 0; i < pids.length; i += PARALLEL) {
    await Promise.all(
      pids.slice(i, i + PARALLEL).map(async (pid) => {
        if (await processHoldsLock(pid, file, byte)) found.push(Number(pid));
      }),
    );
  }
  return found;
}

async function processHoldsLock(pid: string, file: FileId, byte: number): Promise<boolean> {
  let fds: string[];
  try {
    fds = await readdir(`/proc/${pid}/fdinfo`);
  } catch {
    return false; // another user's process, or gone
  }
  const needle = `:${file.inode} `;
  for (const fd of fds) {
    const text = await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8').catch(() => '');
    if (!text.includes(needle)) continue;
    const lines = text.split('\n').filter((line) => line.startsWith('lock:'));
    if (coveringLocks(file, byte, lines).length > 0) return true;
  }
  return false;
}

/** `MAJOR:MINOR` of a Linux dev_t in the kernel's `%02x:%02x` form (glibc's encoding). */
export function deviceName(dev: bigint): string {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n);
  const minor = (dev & 0xffn) | ((dev >> 12n) & 0xffffff00n);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
}
