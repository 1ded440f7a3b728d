/**
 * The result of a check, named like `qemu-img check --output=json` names its fields, and the
 * two ways to present it: qemu-img's human text and its exit status.
 */
import type { Qcow2CheckFinding } from './findings.js';

/**
 * What `checkQcow2` found. Every counter is present (qemu-img leaves out the ones that are 0;
 * compare absent fields as 0). Cluster counts are in clusters of the image, offsets in bytes.
 */
export interface Qcow2CheckResult {
  /** The image file as given. */
  filename: string;
  format: 'qcow2';
  /** Problems that kept the check from reading something (unreadable refcounts). */
  'check-errors': number;
  /** One past the last byte of the last cluster that has a stored or computed refcount. */
  'image-end-offset': number;
  /** Clusters of the virtual disk: its size in whole 512-byte sectors, rounded up to clusters. */
  'total-clusters': number;
  /** Guest clusters the active L1 table maps to host clusters (normal, preallocated or compressed). */
  'allocated-clusters': number;
  /** Allocated clusters not right after the previous one of their L2 table; every compressed one. */
  'fragmented-clusters': number;
  /** Allocated clusters that are compressed. */
  'compressed-clusters': number;
  /** Clusters whose stored refcount is larger than the references to them. */
  leaks: number;
  /** Everything else that is wrong (refcounts too small, bad entries, COPIED flags...). */
  corruptions: number;
  /** Leaks a repair fixed. */
  'leaks-fixed': number;
  /** Corruptions a repair fixed. */
  'corruptions-fixed': number;
  /** The findings, in the order found: the repaired ones first, at most the cap given. */
  findings: Qcow2CheckFinding[];
  /** Findings counted but left out of `findings` because of the cap. */
  'findings-omitted': number;
}

/**
 * qemu-img check's exit status for a result: 0 clean, 1 check errors, 2 corruptions, 3 leaks
 * only (qemu-img uses 1 also when it cannot check at all; `checkQcow2` throws then).
 */
export function qcow2CheckExitStatus(result: Pick<Qcow2CheckResult, 'check-errors' | 'corruptions' | 'leaks'>): 0 | 1 | 2 | 3 {
  if (result['check-errors'] > 0) return 1;
  if (result.corruptions > 0) return 2;
  if (result.leaks > 0) return 3;
  return 0;
}

/**
 * The result as qemu-img check prints it in its human format (qemu-img.c
 * `dump_human_image_check`), preceded by the repair summary when something was repaired.
 * Returns the text with a final newline.
 */
export function formatQcow2CheckHuman(result: Qcow2CheckResult): string {
  let out = '';
  if (result['leaks-fixed'] > 0 || result['corruptions-fixed'] > 0) {
    out +=
      'The following inconsistencies were found and repaired:\n\n' +
      `    ${result['leaks-fixed']} leaked clusters\n` +
      `    ${result['corruptions-fixed']} corruptions\n\n` +
      'Double checking the fixed image now...\n';
  }
  if (result.corruptions === 0 && result.leaks === 0 && result['check-errors'] === 0) {
    out += 'No errors were found on the image.\n';
  } else {
    if (result.corruptions > 0) {
      out += `\n${result.corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n`;
    }
    if (result.leaks > 0) {
      out += `\n${result.leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n`;
    }
    if (result['check-errors'] > 0) {
      out += `\n${result['check-errors']} internal errors have occurred during the check.\n`;
    }
  }
  const total = result['total-clusters'];
  const allocated = result['allocated-clusters'];
  if (total !== 0 && allocated !== 0) {
    out +=
      `${allocated}/${total} = ${percent((allocated * 100) / total)}% allocated, ` +
      `${percent((result['fragmented-clusters'] * 100) / allocated)}% fragmented, ` +
      `${percent((result['compressed-clusters'] * 100) / allocated)}% compressed clusters\n`;
  }
  if (result['image-end-offset'] !== 0) out += `Image end offset: ${result['image-end-offset']}\n`;
  return out;
}

/**
 * `value` with two decimals as C's `%0.2f` prints it. `toFixed` rounds exact ties up, printf
 * to even; a double is an exact tie at two decimals only when it is an odd multiple of 1/8.
 */
export function percent(value: number): string {
  const eighths = value * 8;
  if (Number.isInteger(eighths) && eighths % 2 !== 0) {
    const hundredths = Math.floor(value * 100);
    return ((hundredths % 2 === 0 ? hundredths : hundredths + 1) / 100).toFixed(2);
  }
  return value.toFixed(2);
}
