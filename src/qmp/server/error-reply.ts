/** How a failure of a command becomes the `error` member of a QMP reply. */
import { BitbackError } from '../../errors.js';
import { QmpText } from '../protocol/constants.js';
import { QmpError } from '../protocol/errors.js';
import { type QmpErrorBody } from '../protocol/messages.js';

/**
 * The error body for `e`: a `QmpError` keeps its class and text; another `BitbackError` is a
 * GenericError with its message; anything else is GenericError "internal error", and `expected`
 * is false so that the caller reports it.
 */
export function errorBodyFor(e: unknown): { body: QmpErrorBody; expected: boolean } {
  if (e instanceof QmpError) return { body: { class: e.errorClass, desc: e.desc }, expected: true };
  if (e instanceof BitbackError) return { body: { class: 'GenericError', desc: e.message }, expected: true };
  return { body: { class: 'GenericError', desc: QmpText.internalError }, expected: false };
}
