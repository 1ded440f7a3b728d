/**
 * Real images made by `qemu-img` and `qemu-io` for the golden tests. Test-only: this module
 * does I/O (the codecs never do). Every image lives in a temporary directory that
 * {@link Scratch.remove} deletes; the tools are run synchronously and exit by themselves.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A tool that has not exited after this long is killed (execFileSync's `timeout`) and the test fails. */
const TIMEOUT_MS = 60_000;

/** The parts of `qemu-img info --output=json` the tests compare against. */
export interface QemuInfo {
  'virtual-size': number;
  'cluster-size': number;
  'backing-filename'?: string;
  'backing-filename-format'?: string;
  'dirty-flag'?: boolean;
  snapshots?: Array<{
    id: string;
    name: string;
    'vm-state-size': number;
    'date-sec': number;
    'date-nsec': number;
    'vm-clock-sec': number;
    'vm-clock-nsec': number;
    icount?: number;
  }>;
  'format-specific': {
    type: string;
    data: {
      compat: string;
      'compression-type'?: string;
      'lazy-refcounts'?: boolean;
      'refcount-bits': number;
      corrupt?: boolean;
      'extended-l2'?: boolean;
      'data-file'?: string;
      'data-file-raw'?: boolean;
      bitmaps?: Array<{ name: string; granularity: number; flags: string[] }>;
    };
  };
}

/** One extent of `qemu-img map --output=json`. */
export interface QemuMapExtent {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/** The parts of `qemu-img check --output=json` the tests use. */
export interface QemuCheck {
  'image-end-offset'?: number;
  'allocated-clusters'?: number;
  'check-errors': number;
  corruptions?: number;
  leaks?: number;
}

/** A temporary directory of images. */
export class Scratch {
  readonly dir = mkdtempSync(join(tmpdir(), 'bitback-qcow2-format-'));

  path(name: string): string {
    return join(this.dir, name);
  }

  /** Runs qemu-img in the directory; returns stdout. Throws when it fails. */
  qemuImg(...args: string[]): string {
    return execFileSync('qemu-img', args, { cwd: this.dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: TIMEOUT_MS });
  }

  /** Runs qemu-io commands on a qcow2 image (e.g. `write -P 0x5a 0 64k`). */
  qemuIo(name: string, ...commands: string[]): void {
    const out = execFileSync('qemu-io', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), name], {
      cwd: this.dir,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: TIMEOUT_MS,
    });
    if (/failed|error/i.test(out)) throw new Error(`qemu-io ${commands.join('; ')} on ${name}: ${out}`);
  }

  /** `qemu-img create -f qcow2 [-o k=v,...] name size`. */
  create(name: string, size: string | number, options: Record<string, string | number> = {}, extra: string[] = []): string {
    const o = Object.entries(options).map(([k, v]) => `${k}=${v}`);
    this.qemuImg('create', '-q', '-f', 'qcow2', ...(o.length > 0 ? ['-o', o.join(',')] : []), ...extra, name, String(size));
    return name;
  }

  info(name: string): QemuInfo {
    return JSON.parse(this.qemuImg('info', '--output=json', name)) as QemuInfo;
  }

  map(name: string): QemuMapExtent[] {
    return JSON.parse(this.qemuImg('map', '--output=json', name)) as QemuMapExtent[];
  }

  check(name: string): QemuCheck {
    return JSON.parse(this.qemuImg('check', '--output=json', name)) as QemuCheck;
  }

  read(name: string): Uint8Array {
    return new Uint8Array(readFileSync(this.path(name)));
  }

  write(name: string, data: Uint8Array): void {
    writeFileSync(this.path(name), data);
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
