/**
 * Every constant of the NBD wire protocol that bitback uses, each with the section of the
 * specification (`doc/proto.md` in NetworkBlockDevice/nbd) that defines it. Numbers on the wire
 * are big-endian ("network byte order", proto.md "Conventions").
 */

// ---- Magic numbers -------------------------------------------------------------------------

/** "NBDMAGIC": the first 8 bytes the server sends (proto.md "Newstyle negotiation"). */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": follows NBDMAGIC in newstyle negotiation and starts every option request. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
/** Starts every option reply (proto.md "Option reply"). */
export const NBD_REP_MAGIC = 0x3e889045565a9n;
/** Oldstyle negotiation magic; recognised only to name it in errors. */
export const NBD_OLDSTYLE_MAGIC = 0x00420281861253n;

/** Compact request header (proto.md "Request message"). */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** Extended request header, after NBD_OPT_EXTENDED_HEADERS (proto.md "Request message"). */
export const NBD_EXTENDED_REQUEST_MAGIC = 0x21e41c71;
/** Simple reply (proto.md "Simple reply message"). */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
/** Structured reply chunk (proto.md "Structured reply chunk message"). */
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
/** Extended reply chunk, after NBD_OPT_EXTENDED_HEADERS (proto.md "Extended reply chunk message"). */
export const NBD_EXTENDED_REPLY_MAGIC = 0x6e8a278c;

// ---- Handshake flags (proto.md "Newstyle negotiation") ------------------------------------

/** Server handshake flag: fixed newstyle negotiation. */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
/** Server handshake flag: the 124 zero bytes after NBD_OPT_EXPORT_NAME may be omitted. */
export const NBD_FLAG_NO_ZEROES = 1 << 1;
/** Client flag: the client speaks fixed newstyle. */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
/** Client flag: the client does not want the 124 zero bytes. */
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// ---- Options (proto.md "Option types") -----------------------------------------------------

export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
/** Withdrawn (proto.md); answered with NBD_REP_ERR_UNSUP. */
export const NBD_OPT_PEEK_EXPORT = 4;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// ---- Option replies (proto.md "Option reply types") ----------------------------------------

export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
/** Error replies have bit 31 set. */
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = 0x80000001;
export const NBD_REP_ERR_POLICY = 0x80000002;
export const NBD_REP_ERR_INVALID = 0x80000003;
export const NBD_REP_ERR_PLATFORM = 0x80000004;
export const NBD_REP_ERR_TLS_REQD = 0x80000005;
export const NBD_REP_ERR_UNKNOWN = 0x80000006;
export const NBD_REP_ERR_SHUTDOWN = 0x80000007;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
export const NBD_REP_ERR_TOO_BIG = 0x80000009;
export const NBD_REP_ERR_EXT_HEADER_REQD = 0x8000000a;

// ---- NBD_INFO types (proto.md "NBD_OPT_INFO and NBD_OPT_GO") ------------------------------

export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// ---- Transmission flags (proto.md "Transmission flags") -----------------------------------

export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;
export const NBD_FLAG_BLOCK_STAT_PAYLOAD = 1 << 12;

// ---- Commands (proto.md "Request types") ---------------------------------------------------

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;
export const NBD_CMD_RESIZE = 8;

// ---- Command flags (proto.md "Command flags") ----------------------------------------------

export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;
export const NBD_CMD_FLAG_PAYLOAD_LEN = 1 << 5;

// ---- Structured replies (proto.md "Structured reply flags" / "Structured reply types") ----

export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_BLOCK_STATUS_EXT = 6;
/** Error types have bit 15 set. */
export const NBD_REPLY_TYPE_ERROR_BIT = 1 << 15;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// ---- Error values (proto.md "Error values") ------------------------------------------------

export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

// ---- Metadata contexts (proto.md "Metadata querying"; QEMU docs/interop/nbd.rst) ----------

/** The one context of the base namespace. */
export const BASE_ALLOCATION = 'base:allocation';
/** `base:allocation` bit 0: the range is a hole (not allocated). */
export const NBD_STATE_HOLE = 1 << 0;
/** `base:allocation` bit 1: the range reads as zeroes. */
export const NBD_STATE_ZERO = 1 << 1;
/** QEMU's dirty-bitmap contexts: `qemu:dirty-bitmap:NAME`. */
export const QEMU_DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';
/** `qemu:dirty-bitmap:NAME` bit 0: the range is dirty. */
export const NBD_STATE_DIRTY = 1 << 0;
/** QEMU's allocation-depth context: the value is the depth in the backing chain (0: none). */
export const QEMU_ALLOCATION_DEPTH = 'qemu:allocation-depth';

// ---- Sizes and limits ----------------------------------------------------------------------

/** Bytes of a compact request header. */
export const REQUEST_HEADER_SIZE = 28;
/** Bytes of an extended request header. */
export const EXTENDED_REQUEST_HEADER_SIZE = 32;
/** Bytes of a simple reply. */
export const SIMPLE_REPLY_SIZE = 16;
/** Bytes of a structured reply chunk header. */
export const STRUCTURED_REPLY_HEADER_SIZE = 20;
/** Bytes of an extended reply chunk header. */
export const EXTENDED_REPLY_HEADER_SIZE = 32;
/** Bytes of an option request header (magic, option, length). */
export const OPTION_HEADER_SIZE = 16;
/** Bytes of an option reply header (magic, option, type, length). */
export const OPTION_REPLY_HEADER_SIZE = 20;
/** Longest string (export names, messages) the spec allows (proto.md "Conventions"). */
export const NBD_MAX_STRING = 4096;
/** The largest option payload bitback accepts (a few names and queries; proto.md allows servers to limit it). */
export const MAX_OPTION_LENGTH = 64 * 1024;
/** Payload limit bitback announces and enforces (NBD_INFO_BLOCK_SIZE maximum). */
export const DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024;
/** The payload every peer must accept even without NBD_INFO_BLOCK_SIZE (proto.md "Block size constraints"). */
export const DEFAULT_PEER_MAX_PAYLOAD = 32 * 1024 * 1024;
/** Bytes of zero padding after NBD_OPT_EXPORT_NAME's reply unless NO_ZEROES was agreed. */
export const EXPORT_NAME_PADDING = 124;

/** Names of options, for messages. */
export function optionName(option: number): string {
  const names: Record<number, string> = {
    [NBD_OPT_EXPORT_NAME]: 'NBD_OPT_EXPORT_NAME',
    [NBD_OPT_ABORT]: 'NBD_OPT_ABORT',
    [NBD_OPT_LIST]: 'NBD_OPT_LIST',
    [NBD_OPT_PEEK_EXPORT]: 'NBD_OPT_PEEK_EXPORT',
    [NBD_OPT_STARTTLS]: 'NBD_OPT_STARTTLS',
    [NBD_OPT_INFO]: 'NBD_OPT_INFO',
    [NBD_OPT_GO]: 'NBD_OPT_GO',
    [NBD_OPT_STRUCTURED_REPLY]: 'NBD_OPT_STRUCTURED_REPLY',
    [NBD_OPT_LIST_META_CONTEXT]: 'NBD_OPT_LIST_META_CONTEXT',
    [NBD_OPT_SET_META_CONTEXT]: 'NBD_OPT_SET_META_CONTEXT',
    [NBD_OPT_EXTENDED_HEADERS]: 'NBD_OPT_EXTENDED_HEADERS',
  };
  return names[option] ?? `option ${option}`;
}

/** Names of option reply types, for messages. */
export function replyTypeName(type: number): string {
  const names: Record<number, string> = {
    [NBD_REP_ACK]: 'NBD_REP_ACK',
    [NBD_REP_SERVER]: 'NBD_REP_SERVER',
    [NBD_REP_INFO]: 'NBD_REP_INFO',
    [NBD_REP_META_CONTEXT]: 'NBD_REP_META_CONTEXT',
    [NBD_REP_ERR_UNSUP]: 'NBD_REP_ERR_UNSUP',
    [NBD_REP_ERR_POLICY]: 'NBD_REP_ERR_POLICY',
    [NBD_REP_ERR_INVALID]: 'NBD_REP_ERR_INVALID',
    [NBD_REP_ERR_PLATFORM]: 'NBD_REP_ERR_PLATFORM',
    [NBD_REP_ERR_TLS_REQD]: 'NBD_REP_ERR_TLS_REQD',
    [NBD_REP_ERR_UNKNOWN]: 'NBD_REP_ERR_UNKNOWN',
    [NBD_REP_ERR_SHUTDOWN]: 'NBD_REP_ERR_SHUTDOWN',
    [NBD_REP_ERR_BLOCK_SIZE_REQD]: 'NBD_REP_ERR_BLOCK_SIZE_REQD',
    [NBD_REP_ERR_TOO_BIG]: 'NBD_REP_ERR_TOO_BIG',
    [NBD_REP_ERR_EXT_HEADER_REQD]: 'NBD_REP_ERR_EXT_HEADER_REQD',
  };
  return names[type] ?? `reply type 0x${type.toString(16)}`;
}

/** Names of commands, for messages. */
export function commandName(command: number): string {
  const names: Record<number, string> = {
    [NBD_CMD_READ]: 'NBD_CMD_READ',
    [NBD_CMD_WRITE]: 'NBD_CMD_WRITE',
    [NBD_CMD_DISC]: 'NBD_CMD_DISC',
    [NBD_CMD_FLUSH]: 'NBD_CMD_FLUSH',
    [NBD_CMD_TRIM]: 'NBD_CMD_TRIM',
    [NBD_CMD_CACHE]: 'NBD_CMD_CACHE',
    [NBD_CMD_WRITE_ZEROES]: 'NBD_CMD_WRITE_ZEROES',
    [NBD_CMD_BLOCK_STATUS]: 'NBD_CMD_BLOCK_STATUS',
    [NBD_CMD_RESIZE]: 'NBD_CMD_RESIZE',
  };
  return names[command] ?? `command ${command}`;
}
