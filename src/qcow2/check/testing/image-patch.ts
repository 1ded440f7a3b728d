/**
 * Test-only: finds structures in a qcow2 file with the format codecs and patches them in
 * place, to make damaged images from good ones that qemu-img made.
 */
import { readFile, writeFile } from 'node:fs/promises';
import {
  decodeImageHeader,
  decodeL1Table,
  decodeL2Entry,
  decodeRefcountTable,
  geometryOf,
  getRefcount,
  setRefcount,
  writeL1Entry,
  writeL2Entry,
  type L1Entry,
  type L2Entry,
  type Qcow2Geometry,
  type Qcow2ImageHeader,
} from '../../format/index.js';

/** A qcow2 file held in memory to be inspected and patched, then written back. */
export class PatchableImage {
  private constructor(
    readonly path: string,
    readonly bytes: Uint8Array,
    readonly image: Qcow2ImageHeader,
    readonly geometry: Qcow2Geometry,
  ) {}

  static async load(path: string): Promise<PatchableImage> {
    const bytes = new Uint8Array(await readFile(path));
    const image = decodeImageHeader(bytes, bytes.length);
    return new PatchableImage(path, bytes, image, geometryOf(image.header));
  }

  get clusterSize(): number {
    return this.geometry.clusterSize;
  }

  /** Offsets of the refcount blocks, by refcount table index (0 = none). */
  refcountBlocks(): number[] {
    const h = this.image.header;
    return decodeRefcountTable(this.bytes, h.refcountTableOffset, (h.refcountTableClusters * this.clusterSize) / 8, this.geometry, this.bytes.length);
  }

  /** The stored refcount of `cluster`. */
  refcount(cluster: number): number {
    const { block, index } = this.locate(cluster);
    return block === 0 ? 0 : getRefcount(this.bytes.subarray(block, block + this.clusterSize), index, this.geometry.refcountOrder);
  }

  /** Sets the stored refcount of `cluster` (its refcount block must exist). */
  setRefcount(cluster: number, value: number): void {
    const { block, index } = this.locate(cluster);
    if (block === 0) throw new Error(`cluster ${cluster} has no refcount block`);
    setRefcount(this.bytes.subarray(block, block + this.clusterSize), index, this.geometry.refcountOrder, value);
  }

  /** Zeroes refcount table entry `index`. */
  dropRefcountBlock(index: number): void {
    this.bytes.fill(0, this.image.header.refcountTableOffset + index * 8, this.image.header.refcountTableOffset + index * 8 + 8);
  }

  /** The active L1 table. */
  l1(): L1Entry[] {
    const h = this.image.header;
    return decodeL1Table(this.bytes, h.l1TableOffset, h.l1Size, this.geometry);
  }

  /** Writes entry `index` of the active L1 table. */
  setL1(index: number, entry: L1Entry): void {
    const h = this.image.header;
    writeL1Entry(this.bytes.subarray(h.l1TableOffset, h.l1TableOffset + h.l1Size * 8), index, entry, this.geometry);
  }

  /** Entry `index` of the L2 table at `l2Offset`. */
  l2(l2Offset: number, index: number): L2Entry {
    return decodeL2Entry(this.bytes.subarray(l2Offset, l2Offset + this.clusterSize), index, this.geometry);
  }

  /** Writes entry `index` of the L2 table at `l2Offset`. */
  setL2(l2Offset: number, index: number, entry: L2Entry): void {
    writeL2Entry(this.bytes.subarray(l2Offset, l2Offset + this.clusterSize), index, entry, this.geometry);
  }

  /** Clusters of the file (its size rounded up). */
  get fileClusters(): number {
    return Math.ceil(this.bytes.length / this.clusterSize);
  }

  /** Writes the patched bytes back to the file. */
  async save(): Promise<void> {
    await writeFile(this.path, this.bytes);
  }

  private locate(cluster: number): { block: number; index: number } {
    const perBlock = this.geometry.refcountBlockEntries;
    const blocks = this.refcountBlocks();
    return { block: blocks[Math.floor(cluster / perBlock)] ?? 0, index: cluster % perBlock };
  }
}
