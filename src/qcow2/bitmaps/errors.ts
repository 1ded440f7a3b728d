/**
 * Errors of the persistent bitmap code that the existing classes do not cover.
 */
import { BitbackError, type BitbackErrorOptions } from '../../errors.js';

/**
 * A bitmap of that name already exists in the image (code `ALREADY_EXISTS`). The reason uses
 * QEMU's wording: `Bitmap already exists: NAME`.
 */
export class BitmapExistsError extends BitbackError {
  constructor(action: string, name: string, options?: BitbackErrorOptions) {
    super('ALREADY_EXISTS', action, `Bitmap already exists: ${name}`, options);
  }
}
