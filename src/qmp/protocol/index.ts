/** The QMP wire protocol: constants, errors, the stream splitter, JSON codec, message codecs. No I/O. */
export * from './constants.js';
export * from './errors.js';
export { QmpSplitter, type QmpFrame, type QmpSplitterOptions } from './splitter.js';
export { JsonFloat, parseQmpJson, type ParseQmpJsonOptions } from './json-parse.js';
export { encodeQmpJson } from './json-encode.js';
export * from './messages.js';
export * from './encode.js';
export { commandId, decodeCommand, decodeServerMessage, isJsonObject, type DecodeCommandOptions } from './decode.js';
