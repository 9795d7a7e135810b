// A stand-in for an OpenAI-compatible `/v1/chat/completions` endpoint (the
// real streaming wire format), so `llm` agents answer without a model:
//
//   model "tools":  first asks for the calculator (2+3*4); once the tool's
//                   result is in the conversation, answers "It is **14**."
//                   after one release().
//   model "writer": streams a markdown reply in parts, each after one
//                   release(), then ends after one more.
//
// A test holds a reply where it wants to look at the page and lets it go on
// with release(): no timing involved.

import http from 'node:http';

export const WRITER_PARTS = [
  '## Plan\n\n- first',
  ' item\n- **second',
  '** item\n\n```js\nconst a = 1;\n```\n\n<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>',
];

function chunk(delta, finish = null) {
  const body = {
    id: 'chatcmpl-1',
    object: 'chat.completion.chunk',
    created: 1,
    model: 'stand-in',
    choices: [{ index: 0, delta, finish_reason: finish }],
  };
  return `data: ${JSON.stringify(body)}\n\n`;
}

export class LlmStandIn {
  static async start() {
    const standIn = new LlmStandIn();
    await new Promise((resolve) => standIn.server.listen(0, '127.0.0.1', resolve));
    standIn.port = standIn.server.address().port;
    return standIn;
  }

  constructor() {
    this.released = 0;
    this.waiters = [];
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  // Lets a held reply go on by one step.
  release() {
    this.released += 1;
    for (const wake of this.waiters.splice(0)) wake();
  }

  async held() {
    while (this.released === 0) await new Promise((resolve) => this.waiters.push(resolve));
    this.released -= 1;
  }

  async handle(req, res) {
    let raw = '';
    for await (const part of req) raw += part;
    if (req.method !== 'POST' || !req.url.endsWith('/chat/completions')) {
      res.writeHead(404).end();
      return;
    }
    const body = JSON.parse(raw);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    if (body.model === 'tools') await this.tools(body, res);
    else await this.writer(res);
    res.end('data: [DONE]\n\n');
  }

  async tools(body, res) {
    const answered = body.messages.some((m) => m.role === 'tool');
    if (!answered) {
      const call = { index: 0, id: 'call_1', type: 'function', function: { name: 'calculator', arguments: '' } };
      res.write(chunk({ role: 'assistant', tool_calls: [call] }));
      res.write(chunk({ tool_calls: [{ index: 0, function: { arguments: '{"expression":' } }] }));
      res.write(chunk({ tool_calls: [{ index: 0, function: { arguments: '"2+3*4"}' } }] }));
      res.write(chunk({}, 'tool_calls'));
      return;
    }
    await this.held();
    res.write(chunk({ role: 'assistant', content: 'It is ' }));
    res.write(chunk({ content: '**14**.' }));
    res.write(chunk({}, 'stop'));
  }

  async writer(res) {
    for (const [i, part] of WRITER_PARTS.entries()) {
      if (i > 0) await this.held();
      res.write(chunk(i === 0 ? { role: 'assistant', content: part } : { content: part }));
    }
    await this.held();
    res.write(chunk({}, 'stop'));
  }

  close() {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
