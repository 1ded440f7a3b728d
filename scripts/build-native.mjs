#!/usr/bin/env node
// Builds bitback's native addon (native/bitback_native.c) with node-gyp during `npm install`.
// Without the addon bitback reads sparse files more slowly and cannot take QEMU's image locks, so it
// opens images read-only only; a failed build warns instead of failing the install. Under CI=true a
// failed build is an error.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

function nodeGyp() {
  // npm tells lifecycle scripts where its own node-gyp is.
  if (process.env.npm_config_node_gyp) return process.env.npm_config_node_gyp;
  try {
    return createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    // npm ships node-gyp inside itself.
    return join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  }
}

// Build against the headers of the Node.js that runs us (never download them: there may be no
// network). npm passes its nodedir setting; otherwise use the installation prefix when it has them.
function nodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = dirname(dirname(process.execPath));
  return existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined;
}

const dir = nodeDir();
const result = spawnSync(process.execPath, [nodeGyp(), 'rebuild', ...(dir ? [`--nodedir=${dir}`] : [])], { stdio: 'inherit' });
if (result.status !== 0) {
  const message = 'bitback: the native addon could not be built (needs python3, make, a C compiler and Node.js headers); ' +
    'without it bitback reads sparse raw files more slowly and, unable to take image locks, opens images for reading only';
  if (process.env.CI === 'true') {
    console.error(`${message}. CI=true: failing.`);
    process.exit(1);
  }
  console.warn(message);
}
