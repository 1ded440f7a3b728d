/**
 * Test-only: bad commands and the replies qemu-system-x86_64 7.2.22 gave for them (recorded by
 * hand, and re-checked against a live QEMU by `test/e2e/qmp-qemu.test.ts`). Each input is sent
 * as is, after negotiation unless `beforeNegotiation`; the commands use the schemas in
 * `qemu-schemas.ts`, and every case fails before a handler would run.
 */

/** One input and QEMU's reply to it. */
export interface QemuErrorCase {
  /** The raw text sent (one JSON object; not always valid JSON). */
  input: string;
  class: 'GenericError' | 'CommandNotFound';
  desc: string;
  /** The reply echoes this id. */
  id?: unknown;
  /** Sent before `qmp_capabilities`. */
  beforeNegotiation?: boolean;
}

const generic = (input: string, desc: string, id?: unknown): QemuErrorCase => (id === undefined ? { input, class: 'GenericError', desc } : { input, class: 'GenericError', desc, id });
const args = (command: string, a: string): string => `{"execute":"${command}","arguments":${a}}`;
const bitmapAdd = (a: string): string => args('block-dirty-bitmap-add', a);

export const QEMU_ERROR_CASES: readonly QemuErrorCase[] = [
  // Negotiation (monitor/qmp.c, monitor/qmp-cmds-control.c).
  { input: '{"execute":"query-version"}', class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'", beforeNegotiation: true },
  { input: '{"execute":"nope","id":"a"}', class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'", id: 'a', beforeNegotiation: true },
  { ...generic('{"execute":"qmp_capabilities","arguments":{"enable":["foo"]}}', "Parameter 'null' does not accept value 'foo'"), beforeNegotiation: true },
  { ...generic('{"execute":"qmp_capabilities","arguments":{"enable":"oob"}}', "Invalid parameter type for 'enable', expected: array"), beforeNegotiation: true },
  { ...generic('{"execute":"qmp_capabilities","arguments":{"foo":1}}', "Parameter 'foo' is unexpected"), beforeNegotiation: true },
  { ...generic('{"exec":1}', "QMP input member 'exec' is unexpected"), beforeNegotiation: true },
  { input: '{"execute":"qmp_capabilities","id":7}', class: 'CommandNotFound', desc: 'Capabilities negotiation is already complete, command ignored', id: 7 },
  // The command object (qapi/qmp-dispatch.c).
  { input: '{"execute":"foo","id":"x"}', class: 'CommandNotFound', desc: 'The command foo has not been found', id: 'x' },
  generic('{"execute":1}', "QMP input member 'execute' must be a string"),
  generic('{"execute":"query-version","foo":1}', "QMP input member 'foo' is unexpected"),
  generic('{"execute":"query-version","control":{}}', "QMP input member 'control' is unexpected"),
  generic('{"execute":"query-version","exec-oob":"query-version"}', "QMP input member 'exec-oob' is unexpected"),
  generic('{"execute":"block-dirty-bitmap-add","arguments":[1]}', "QMP input member 'arguments' must be an object"),
  generic('{"execute":"block-dirty-bitmap-add","arguments":null}', "QMP input member 'arguments' must be an object"),
  generic('{"id":5}', "QMP input lacks member 'execute'", 5),
  generic('{"arguments":{}}', "QMP input lacks member 'execute'"),
  generic('{"execute":"query-version","arguments":{"a":1}}', "Parameter 'a' is unexpected"),
  // JSON syntax (qobject/json-parser.c) inside one object.
  generic('{"execute": }', 'JSON parse error, expecting value'),
  generic('{"a":1,}', 'JSON parse error, expecting value'),
  generic('{"execute" "query-version"}', 'JSON parse error, missing : in object pair'),
  generic('{"execute":"query-version", "execute":"foo"}', 'JSON parse error, duplicate key'),
  generic('{"execute":"q\\x"}', 'JSON parse error, invalid escape sequence in string'),
  generic('{"execute":"query-\\ud800"}', 'JSON parse error, \\ud800 is not a valid Unicode character'),
  generic('{"execute":"query-version","id":"\\u12x4"}', 'JSON parse error, \\u12x4 is not a valid Unicode character'),
  generic('{"execute":"query-version","id":"\\ude00"}', 'JSON parse error, \\ude00 is not a valid Unicode character'),
  generic('{"execute":"query-version","id":"\\ud800\\u0041"}', 'JSON parse error, \\ud800 is not a valid Unicode character'),
  generic('{"execute": garbage}', "JSON parse error, invalid keyword 'garbage'"),
  generic('{"execute":"query-version","id":tru}', "JSON parse error, invalid keyword 'tru'"),
  generic('{1:2}', 'JSON parse error, key is not a string in object'),
  generic('{"a":1 "b":2}', 'JSON parse error, expected separator in dict'),
  generic('{"id":[1 2]}', 'JSON parse error, expected separator in list'),
  generic('{"a":]', 'JSON parse error, expecting value'),
  // Arguments (qapi/qobject-input-visitor.c), block-dirty-bitmap-add.
  generic(bitmapAdd('{"name":"b"}'), "Parameter 'node' is missing"),
  generic('{"execute":"block-dirty-bitmap-add"}', "Parameter 'node' is missing"),
  generic(bitmapAdd('{"foo":1,"name":"x"}'), "Parameter 'node' is missing"),
  generic(bitmapAdd('{"node":"n","name":"b","foo":1}'), "Parameter 'foo' is unexpected"),
  generic(bitmapAdd('{"node":1,"name":"b"}'), "Invalid parameter type for 'node', expected: string"),
  generic(bitmapAdd('{"node":"n","name":null}'), "Invalid parameter type for 'name', expected: string"),
  generic(bitmapAdd('{"node":"n","name":{},"foo":1}'), "Invalid parameter type for 'name', expected: string"),
  generic(bitmapAdd('{"node":"n","name":"b","granularity":"x"}'), "Parameter 'granularity' expects uint64"),
  generic(bitmapAdd('{"node":"n","name":"b","granularity":1.5}'), "Parameter 'granularity' expects uint64"),
  generic(bitmapAdd('{"node":"n","name":"b","granularity":65536.0}'), "Parameter 'granularity' expects uint64"),
  generic(bitmapAdd('{"node":"n","name":"b","granularity":99999999999999999999999}'), "Parameter 'granularity' expects uint64"),
  generic(bitmapAdd('{"node":"n","name":"b","granularity":-1}'), "Parameter 'granularity' expects uint32_t"),
  generic(bitmapAdd('{"node":"n","name":"b","granularity":4294967296}'), "Parameter 'granularity' expects uint32_t"),
  generic(bitmapAdd('{"node":"n","name":"b","granularity":18446744073709551615}'), "Parameter 'granularity' expects uint32_t"),
  generic(bitmapAdd('{"node":"n","name":"b","persistent":"yes"}'), "Invalid parameter type for 'persistent', expected: boolean"),
  generic(bitmapAdd('{"node":"n","name":"b","persistent":null}'), "Invalid parameter type for 'persistent', expected: boolean"),
  generic(bitmapAdd('{"node":"n","name":"b","persistent":0}'), "Invalid parameter type for 'persistent', expected: boolean"),
  // int (int64).
  generic(args('human-monitor-command', '{"command-line":"info version","cpu-index":"x"}'), "Invalid parameter type for 'cpu-index', expected: integer"),
  generic(args('human-monitor-command', '{"command-line":"info version","cpu-index":1.0}'), "Invalid parameter type for 'cpu-index', expected: integer"),
  generic(args('human-monitor-command', '{"command-line":"info version","cpu-index":1e2}'), "Invalid parameter type for 'cpu-index', expected: integer"),
  generic(args('human-monitor-command', '{"command-line":"info version","cpu-index":18446744073709551615}'), "Invalid parameter type for 'cpu-index', expected: integer"),
  generic(args('human-monitor-command', '{"command-line":"info version","cpu-index":null}'), "Invalid parameter type for 'cpu-index', expected: integer"),
  // Arrays, unions, nested structs, enums.
  generic(args('transaction', '{"actions":1}'), "Invalid parameter type for 'actions', expected: array"),
  generic(args('transaction', '{"actions":[1]}'), "Invalid parameter type for 'actions[0]', expected: object"),
  generic(args('transaction', '{"actions":[{}]}'), "Parameter 'actions[0].type' is missing"),
  generic(args('transaction', '{"actions":[{"type":"foo"}]}'), "Parameter 'type' does not accept value 'foo'"),
  generic(args('transaction', '{"actions":[{"type":"block-dirty-bitmap-add"}]}'), "Parameter 'actions[0].data' is missing"),
  generic(args('transaction', '{"actions":[{"type":"block-dirty-bitmap-add","data":{"node":"x"}}]}'), "Parameter 'actions[0].data.name' is missing"),
  generic(args('transaction', '{"actions":[{"type":"block-dirty-bitmap-add","data":{"node":"x","name":"y","foo":1}}]}'), "Parameter 'actions[0].data.foo' is unexpected"),
  generic(args('transaction', '{"actions":[{"type":"block-dirty-bitmap-add","data":{"node":"x","name":"y"},"foo":1}]}'), "Parameter 'actions[0].foo' is unexpected"),
  generic(args('transaction', '{"actions":[{"type":"block-dirty-bitmap-add","data":{"node":"x","name":"y","granularity":4294967296}}]}'), "Parameter 'granularity' expects uint32_t"),
  generic(args('transaction', '{"actions":[{"type":"block-dirty-bitmap-add","data":{"node":"x","name":"y","granularity":"a"}}]}'), "Parameter 'actions[0].data.granularity' expects uint64"),
  generic(args('transaction', '{"actions":[{"type":"block-dirty-bitmap-add","data":{"node":"x","name":"y","persistent":1}}]}'), "Invalid parameter type for 'actions[0].data.persistent', expected: boolean"),
  generic(args('transaction', '{"actions":[],"properties":{"completion-mode":"x"}}'), "Parameter 'completion-mode' does not accept value 'x'"),
  generic(args('transaction', '{"actions":[],"properties":{"completion-mode":1}}'), "Invalid parameter type for 'properties.completion-mode', expected: string"),
  generic(args('transaction', '{"actions":[],"properties":1}'), "Invalid parameter type for 'properties', expected: object"),
  generic(args('transaction', '{"actions":[],"properties":{"foo":1}}'), "Parameter 'properties.foo' is unexpected"),
  generic(args('block-latency-histogram-set', '{"id":"x","boundaries":[1,"a"]}'), "Parameter 'boundaries[1]' expects uint64"),
  generic(args('block-latency-histogram-set', '{"id":"x","boundaries":{}}'), "Invalid parameter type for 'boundaries', expected: array"),
  generic(args('blockdev-backup', '{"device":"x","target":"y","sync":"foo"}'), "Parameter 'sync' does not accept value 'foo'"),
  generic(args('blockdev-backup', '{"device":"x","target":"y","sync":1}'), "Invalid parameter type for 'sync', expected: string"),
  generic(args('blockdev-backup', '{"device":"x","target":"y","sync":"full","x-perf":{"max-workers":"a"}}'), "Invalid parameter type for 'x-perf.max-workers', expected: integer"),
  generic(args('blockdev-backup', '{"device":"x","target":"y","sync":"full","x-perf":{"foo":1}}'), "Parameter 'x-perf.foo' is unexpected"),
  generic(args('blockdev-backup', '{"device":"x","target":"y","sync":"full","x-perf":[]}'), "Invalid parameter type for 'x-perf', expected: object"),
  // Alternates.
  generic(args('block-dirty-bitmap-merge', '{"node":"x","target":"y","bitmaps":[1]}'), "Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr"),
  generic(args('block-dirty-bitmap-merge', '{"node":"x","target":"y","bitmaps":[true]}'), "Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr"),
  generic(args('block-dirty-bitmap-merge', '{"node":"x","target":"y","bitmaps":[{"node":"a"}]}'), "Parameter 'bitmaps[0].name' is missing"),
  generic(args('block-dirty-bitmap-merge', '{"node":"x","target":"y","bitmaps":"a"}'), "Invalid parameter type for 'bitmaps', expected: array"),
  // blockdev-add: a flat union of recursive alternates.
  generic(args('blockdev-add', '{}'), "Parameter 'driver' is missing"),
  generic(args('blockdev-add', '{"driver":"foo"}'), "Parameter 'driver' does not accept value 'foo'"),
  generic(args('blockdev-add', '{"driver":"null-co","node-name":"n0","foo":1}'), "Parameter 'foo' is unexpected"),
  generic(args('blockdev-add', '{"driver":"null-co","node-name":"n0","size":"x"}'), "Invalid parameter type for 'size', expected: integer"),
  generic(args('blockdev-add', '{"node-name":"n0","driver":"null-co","size":1.0}'), "Invalid parameter type for 'size', expected: integer"),
  generic(args('blockdev-add', '{"node-name":"n0","driver":"null-co","read-only":true,"foo":1}'), "Parameter 'foo' is unexpected"),
  generic(args('blockdev-add', '{"driver":"qcow2","node-name":"x","file":1}'), "Invalid parameter type for 'file', expected: BlockdevRef"),
  generic(args('blockdev-add', '{"driver":"qcow2","node-name":"x","file":{"driver":"raw","file":1}}'), "Invalid parameter type for 'file', expected: BlockdevRef"),
  generic(args('blockdev-add', '{"driver":"qcow2","node-name":"x","file":{"driver":"raw","file":{"driver":"foo"}}}'), "Parameter 'driver' does not accept value 'foo'"),
  generic(args('blockdev-add', '{"driver":"qcow2","node-name":"x","file":{"driver":"file"}}'), "Parameter 'file.filename' is missing"),
  generic(args('blockdev-add', '{"driver":"qcow2","node-name":"x","file":{"driver":"file","filename":"/nonexist","foo":1}}'), "Parameter 'file.foo' is unexpected"),
  generic(args('blockdev-add', '{"driver":"qcow2","node-name":"x","file":{"driver":"null-co","size":"a"}}'), "Invalid parameter type for 'file.size', expected: integer"),
  generic(args('blockdev-add', '{"driver":"qcow2","node-name":"x","file":"f","cache":{"direct":1}}'), "Invalid parameter type for 'cache.direct', expected: boolean"),
  generic(args('blockdev-add', '{"driver":"qcow2","node-name":"x","file":"f","backing":1}'), "Invalid parameter type for 'backing', expected: BlockdevRefOrNull"),
  generic(args('blockdev-add', '{"driver":"qcow2","node-name":"x","file":"f","discard":"foo"}'), "Parameter 'discard' does not accept value 'foo'"),
  generic(args('blockdev-add', '{"driver":"qcow2","node-name":"x","file":{"driver":"file","filename":"f","aio":"x"}}'), "Parameter 'aio' does not accept value 'x'"),
  // Union with a wrapped branch (SocketAddressLegacy), uint32.
  generic(args('nbd-server-start', '{"addr":{"type":"unix","data":{"path":"/tmp/x","foo":1}}}'), "Parameter 'addr.data.foo' is unexpected"),
  generic(args('nbd-server-start', '{"addr":{"type":"unix","data":{"path":"/tmp/x"}},"max-connections":-1}'), "Parameter 'max-connections' expects uint32_t"),
  generic(args('nbd-server-start', '{"addr":{"type":"unix","data":{"path":"/tmp/x"}},"max-connections":4294967296}'), "Parameter 'max-connections' expects uint32_t"),
  generic(args('blockdev-del', '{}'), "Parameter 'node-name' is missing"),
];
