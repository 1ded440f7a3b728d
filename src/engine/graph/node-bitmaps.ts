/**
 * The dirty bitmaps of one node. In QEMU a bitmap belongs to a node and records the writes that
 * pass through that node; the same holds here. A qcow2 node keeps its bitmaps in the image
 * (`Qcow2Bitmaps`, which records the image's writes itself and stores persistent bitmaps on
 * close); every other node keeps transient bitmaps in memory, recorded by the node.
 */
import { BitmapStateError, DirtyBitmap } from '../../bitmap/index.js';
import { InvalidArgumentError, NotFoundError, NotSupportedError } from '../../errors.js';
import type { Qcow2Bitmaps } from '../../qcow2/bitmaps/index.js';

/** Options of {@link NodeBitmaps.add}. */
export interface NodeBitmapAddOptions {
  granularity?: number;
  persistent?: boolean;
  disabled?: boolean;
}

/**
 * What the engine does with a node's bitmaps: the operations of QMP's `block-dirty-bitmap-*`.
 * The `DirtyBitmap` objects are live: jobs freeze them (successors), exports read them.
 * Errors: `NotFoundError` for an unknown name, `BitmapStateError` for a busy or inconsistent
 * bitmap, `InvalidArgumentError` for a bad name or granularity, `NotSupportedError` for a
 * persistent bitmap on a node that cannot store one. Command handlers turn them into QEMU's texts.
 */
export interface NodeBitmaps {
  /** Every bitmap, in creation order. */
  readonly bitmaps: readonly DirtyBitmap[];
  /** QEMU's default granularity for a new bitmap on this node. */
  readonly defaultGranularity: number;
  /** The bitmaps record the node's writes themselves (else the node records into them). */
  readonly recordsWrites: boolean;
  get(name: string): DirtyBitmap | undefined;
  add(name: string, options: NodeBitmapAddOptions): Promise<DirtyBitmap>;
  remove(name: string): Promise<void>;
  clear(name: string): Promise<void>;
  enable(name: string): Promise<void>;
  disable(name: string): Promise<void>;
  /** ORs `source` (a bitmap of any node of the same size) into `target`. */
  merge(target: string, source: DirtyBitmap): Promise<void>;
}

/** QEMU's default granularity for a node without clusters: 64 KiB (block/dirty-bitmap.c). */
export const DEFAULT_GRANULARITY = 64 * 1024;

/** Transient bitmaps kept in memory, for nodes that cannot store bitmaps. */
export class MemoryNodeBitmaps implements NodeBitmaps {
  readonly defaultGranularity: number;
  readonly recordsWrites = false;
  readonly #size: number;
  readonly #nodeName: string;
  readonly #list: DirtyBitmap[] = [];

  /**
   * @param size - the node's size in bytes
   * @param defaultGranularity - see {@link NodeBitmaps.defaultGranularity}
   */
  constructor(nodeName: string, size: number, defaultGranularity = DEFAULT_GRANULARITY) {
    this.#nodeName = nodeName;
    this.#size = size;
    this.defaultGranularity = defaultGranularity;
  }

  get bitmaps(): readonly DirtyBitmap[] {
    return this.#list;
  }

  get(name: string): DirtyBitmap | undefined {
    return this.#list.find((b) => b.name === name);
  }

  async add(name: string, options: NodeBitmapAddOptions): Promise<DirtyBitmap> {
    const action = `add bitmap '${name}' to node '${this.#nodeName}'`;
    if (options.persistent === true) {
      throw new NotSupportedError(action, `Cannot store dirty bitmaps in node '${this.#nodeName}'`);
    }
    if (this.get(name) !== undefined) throw new InvalidArgumentError(action, `Bitmap already exists: ${name}`);
    const bitmap = new DirtyBitmap({
      size: this.#size,
      granularity: options.granularity ?? this.defaultGranularity,
      name,
      enabled: options.disabled !== true,
    });
    this.#list.push(bitmap);
    return bitmap;
  }

  async remove(name: string): Promise<void> {
    const action = `remove bitmap '${name}' of node '${this.#nodeName}'`;
    const bitmap = this.#find(action, name);
    if (bitmap.busy) throw new BitmapStateError(action, `Bitmap '${name}' is currently in use by another operation and cannot be used`);
    this.#list.splice(this.#list.indexOf(bitmap), 1);
  }

  async clear(name: string): Promise<void> {
    this.#modify('clear', name, (b) => b.clear());
  }

  async enable(name: string): Promise<void> {
    this.#modify('enable', name, (b) => b.enable());
  }

  async disable(name: string): Promise<void> {
    this.#modify('disable', name, (b) => b.disable());
  }

  async merge(target: string, source: DirtyBitmap): Promise<void> {
    const action = `merge into bitmap '${target}' of node '${this.#nodeName}'`;
    const bitmap = this.#find(action, target);
    bitmap.assertUsable('merge into', 'modify');
    source.assertUsable('merge from', 'read');
    if (source.size !== bitmap.size) throw new InvalidArgumentError(action, "Bitmaps are incompatible and can't be merged");
    bitmap.merge(source);
  }

  /** Records a write into every bitmap (each decides whether it records). */
  recordWrite(offset: number, length: number): void {
    for (const b of this.#list) b.recordWrite(offset, length);
  }

  #find(action: string, name: string): DirtyBitmap {
    const bitmap = this.get(name);
    if (bitmap === undefined) throw new NotFoundError(action, `Dirty bitmap '${name}' not found`);
    return bitmap;
  }

  #modify(verb: string, name: string, apply: (b: DirtyBitmap) => void): void {
    const bitmap = this.#find(`${verb} bitmap '${name}' of node '${this.#nodeName}'`, name);
    bitmap.assertUsable(verb, 'modify');
    apply(bitmap);
  }
}

/** The bitmaps of a qcow2 node: those of its image, persistent or not. */
export class Qcow2NodeBitmaps implements NodeBitmaps {
  readonly recordsWrites = true;
  readonly #store: Qcow2Bitmaps;

  constructor(store: Qcow2Bitmaps) {
    this.#store = store;
  }

  get bitmaps(): readonly DirtyBitmap[] {
    return this.#store.bitmaps;
  }

  get defaultGranularity(): number {
    return this.#store.defaultGranularity;
  }

  get(name: string): DirtyBitmap | undefined {
    return this.#store.get(name);
  }

  add(name: string, options: NodeBitmapAddOptions): Promise<DirtyBitmap> {
    return this.#store.add(name, options);
  }

  remove(name: string): Promise<void> {
    return this.#store.remove(name);
  }

  clear(name: string): Promise<void> {
    return this.#store.clear(name);
  }

  enable(name: string): Promise<void> {
    return this.#store.enable(name);
  }

  disable(name: string): Promise<void> {
    return this.#store.disable(name);
  }

  merge(target: string, source: DirtyBitmap): Promise<void> {
    return this.#store.merge(target, source);
  }
}
