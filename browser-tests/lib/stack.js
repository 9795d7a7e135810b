// A real all-in-one stack for the browser tests: the `chat` binary on free
// ports with a temporary SQLite database, behind a TCP proxy the tests can
// cut (every connection dropped, new ones refused) and restore.

import { spawn, execFile } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { LlmStandIn } from './llm.js';

const run = promisify(execFile);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const PASSWORD = 'correct horse battery';

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// A TCP proxy in front of `target`.
class CuttableProxy {
  constructor(target) {
    this.target = target;
    this.sockets = new Set();
    this.isCut = false;
    this.server = net.createServer((client) => this.accept(client));
  }

  listen() {
    return new Promise((resolve) => {
      this.server.listen(0, '127.0.0.1', () => resolve(this.server.address().port));
    });
  }

  accept(client) {
    if (this.isCut) {
      client.destroy();
      return;
    }
    const upstream = net.connect(this.target, '127.0.0.1');
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => {});
    }
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  }

  // Drops every connection and refuses new ones until restore().
  cut() {
    this.isCut = true;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  restore() {
    this.isCut = false;
  }

  close() {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

export class Stack {
  static async start({ binary }) {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'chat-browser-'));
    // The built-in agents, plus `slow`: an echo that streams a word every
    // 120 ms, and two `llm` agents answered by the stand-in (see llm.js).
    const llm = await LlmStandIn.start();
    const agents = await readFile(path.join(REPO, 'agent-worker/agents.toml'), 'utf8');
    const agentsFile = path.join(dir, 'agents.toml');
    await writeFile(agentsFile, `${agents}
[[agents]]
name = "slow"
description = "Repeats what you say, slowly"
kind = "echo"
delay_ms = 120

[[agents]]
name = "tools"
description = "Uses the calculator, then answers"
kind = "llm"
base_url = "http://127.0.0.1:${llm.port}/v1"
model = "tools"
builtin_tools = ["calculator"]

[[agents]]
name = "writer"
description = "Answers in markdown, in parts"
kind = "llm"
base_url = "http://127.0.0.1:${llm.port}/v1"
model = "writer"
`);
    const port = await freePort();
    const admin = await freePort();
    const env = {
      ...process.env,
      DATA_DIR: dir,
      GATEWAY_LISTEN: `127.0.0.1:${port}`,
      ADMIN_LISTEN: `127.0.0.1:${admin}`,
      AGENTS_CONFIG: agentsFile,
      LOG_FORMAT: 'json',
      RUST_LOG: process.env.RUST_LOG || 'warn',
      // Many users sign up from one address in a few seconds.
      AUTH_RATE_LIMIT_MAX: '1000',
      ACCOUNT_RATE_LIMIT_MAX: '1000',
      RATE_LIMIT_MAX_REQUESTS: '100000',
    };
    const child = spawn(binary, [], { env, stdio: ['ignore', 'inherit', 'inherit'] });
    const stack = new Stack({ binary, dir, port, env, child, llm });
    await stack.ready();
    stack.proxy = new CuttableProxy(port);
    stack.proxyPort = await stack.proxy.listen();
    return stack;
  }

  constructor(fields) {
    Object.assign(this, fields);
    this.exited = new Promise((resolve) => this.child.once('exit', resolve));
  }

  // Polls /readyz until the stack serves (a start-up poll, not synchronisation
  // between test steps).
  async ready() {
    const deadline = Date.now() + 30000;
    for (;;) {
      try {
        const res = await fetch(`http://127.0.0.1:${this.port}/readyz`);
        if (res.ok) return;
      } catch (_) {
        /* not listening yet */
      }
      if (this.child.exitCode != null) throw new Error(`chat exited with ${this.child.exitCode}`);
      if (Date.now() > deadline) throw new Error('the stack did not become ready in 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  // The page's address, through the cuttable proxy.
  get url() {
    return `http://127.0.0.1:${this.proxyPort}`;
  }

  async api(method, route, body, token) {
    const headers = { 'content-type': 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(`http://127.0.0.1:${this.port}/api/v1${route}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  }

  async register(username) {
    const res = await this.api('POST', '/auth/register', { username, password: PASSWORD });
    if (res.status !== 201) throw new Error(`register ${username}: ${res.status} ${JSON.stringify(res.body)}`);
  }

  // Grants the operator role the way an administrator does.
  async grantOperator(username) {
    await run(this.binary, ['chat-core', 'operator', 'grant', username], {
      env: { ...this.env, DATABASE_URL: `sqlite://${path.join(this.dir, 'chat.db')}?mode=rwc` },
    });
  }

  async stop() {
    if (this.proxy) await this.proxy.close();
    this.child.kill('SIGTERM');
    await this.exited;
    await this.llm.close();
  }
}
