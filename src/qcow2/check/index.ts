/**
 * `qemu-img check` for qcow2 images, natively: counts what references every host cluster,
 * compares with the stored refcounts, checks COPIED flags, entries and offsets, and repairs
 * leaks (and, with care, a few corruptions) in place. See `docs/qcow2-check.md`.
 */
export { checkQcow2, type Qcow2CheckOptions } from './check.js';
export { Qcow2CheckError, Qcow2RepairRefusedError } from './errors.js';
export { DEFAULT_MAX_FINDINGS, type Qcow2CheckFinding, type Qcow2FindingKind, type Qcow2FindingSeverity } from './findings.js';
export { formatQcow2CheckHuman, qcow2CheckExitStatus, type Qcow2CheckResult } from './result.js';
