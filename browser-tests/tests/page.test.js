// The chat page and the operator console in Chromium, against a real stack.
// Every wait is on an event or on the page's state (Playwright's waitFor and
// waitForFunction poll it); no step sleeps.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { launch, openPage, screenshot } from '../lib/browser.js';
import { PASSWORD, Stack } from '../lib/stack.js';

const BINARY = process.env.CHAT_BINARY;
let stack;
let browser;
let nextUser = 0;

function username(prefix) {
  nextUser += 1;
  return `${prefix}${nextUser}`;
}

before(async () => {
  assert.ok(BINARY, 'set CHAT_BINARY to the built `chat` binary');
  stack = await Stack.start({ binary: BINARY });
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (stack) await stack.stop();
});

function assertClean(page, allowed = []) {
  const problems = page.problems.filter((p) => !allowed.some((re) => re.test(p)));
  assert.deepEqual(problems, [], 'no console errors, exceptions or CSP violations');
}

async function login(page, name) {
  await page.goto('/');
  await page.fill('#auth-username', name);
  await page.fill('#auth-password', PASSWORD);
  await page.click('#login-btn');
  await page.locator('#app-view').waitFor();
  await connected(page);
}

async function connected(page) {
  await page.locator('#conn-text', { hasText: 'Connected' }).waitFor();
}

async function pickAgent(page, agent) {
  await page.locator('#new-chat-btn').click();
  await page.selectOption('#agent-select', agent);
}

async function send(page, text) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
}

// The stored message bubbles of a role, as text.
async function bubbles(page, role) {
  return page.locator(`#stored-list li.msg-${role}:not(.live) .bubble`).allInnerTexts();
}

// The WCAG contrast ratio of an element's text against its own background.
async function contrast(locator) {
  return locator.evaluate((node) => {
    const style = getComputedStyle(node);
    const luminance = (css) => {
      const [r, g, b] = css.match(/[\d.]+/g).slice(0, 3).map((v) => {
        const c = Number(v) / 255;
        return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
      });
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const [a, b] = [luminance(style.color), luminance(style.backgroundColor)].sort((x, y) => y - x);
    return (a + 0.05) / (b + 0.05);
  });
}

async function waitForReply(page, text) {
  await page.locator('#stored-list li.msg-assistant:not(.live) .bubble', { hasText: text }).first().waitFor();
}

describe('the chat page', () => {
  test('sign up shows the rule first, then a chat streams and renders markdown with injected HTML inert', async () => {
    const { context, page } = await openPage(browser, stack.url);
    await page.goto('/');
    await page.click('#register-btn');
    assert.equal(await page.getAttribute('#auth-password', 'autocomplete'), 'new-password');
    assert.ok(await page.locator('#password-rule').isVisible(), 'the password rule shows before any failure');
    const name = username('newcomer');
    await page.fill('#auth-username', name);
    await page.fill('#auth-password', 'short');
    await page.click('#login-btn');
    await page.locator('#auth-error', { hasText: 'at least 8 characters' }).waitFor();
    await page.fill('#auth-password', PASSWORD);
    await screenshot(page, 'sign-up');
    await page.click('#login-btn');
    await connected(page);

    await pickAgent(page, 'slow');
    const markdown = [
      '**bold** and a [link](https://example.com/docs)',
      '',
      '- one',
      '- two',
      '',
      '| a | b |',
      '|---|---|',
      '| 1 | 2 |',
      '',
      '```',
      'let x = 1;',
      '```',
      '',
      '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>',
      '[click](javascript:window.__xss=3)',
    ].join('\n');
    await send(page, markdown);
    // Streaming is visible: a live bubble with part of the reply.
    await page.locator('#stored-list li.live .bubble', { hasText: 'bold' }).waitFor();
    await screenshot(page, 'streaming');
    const reply = page.locator('#stored-list li.msg-assistant:not(.live)').last();
    await reply.locator('table').waitFor();
    assert.equal(await reply.locator('strong').innerText(), 'bold');
    assert.equal(await reply.locator('li').count(), 2);
    const link = reply.locator('a', { hasText: 'link' });
    assert.equal(await link.getAttribute('target'), '_blank');
    assert.equal(await link.getAttribute('rel'), 'noopener noreferrer');
    assert.equal(await reply.locator('img, script').count(), 0, 'raw HTML never becomes elements');
    assert.ok((await reply.innerText()).includes('<img src=x'), 'raw HTML is shown as text');
    const js = await reply.locator('a', { hasText: 'click' }).getAttribute('href');
    assert.ok(!js || !js.startsWith('javascript:'), `javascript: links are dropped (${js})`);
    await reply.locator('.copy-btn').click();
    await reply.locator('.copy-btn', { hasText: 'Copied' }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), 'let x = 1;\n');
    assert.equal(await page.evaluate(() => window.__xss), undefined, 'no injected script ran');
    await screenshot(page, 'markdown');
    assertClean(page);
    await context.close();
  });

  test('a reload mid-reply shows the reply exactly once', async () => {
    const name = username('reloader');
    await stack.register(name);
    const { context, page } = await openPage(browser, stack.url);
    await login(page, name);
    await pickAgent(page, 'slow');
    const words = Array.from({ length: 30 }, (_, i) => `w${i}`).join(' ');
    await send(page, words);
    await page.locator('#stored-list li.live .bubble', { hasText: 'w3' }).waitFor();
    await page.reload();
    await waitForReply(page, 'w29');
    assert.deepEqual(await bubbles(page, 'assistant'), [words]);
    assert.equal(await page.locator('#stored-list li.live:not(.run-ended)').count(), 0);
    assertClean(page);
    await context.close();
  });

  test('the refresh token is an HttpOnly cookie, never in storage, and a reload with a dead access token stays signed in', async () => {
    const name = username('cookie');
    await stack.register(name);
    const { context, page } = await openPage(browser, stack.url);
    await login(page, name);
    const storage = await page.evaluate(() => ({ ...localStorage, ...sessionStorage }));
    const stored = JSON.parse(storage['chat.auth']);
    assert.ok(stored.access_token, 'the access token is stored');
    assert.equal(stored.refresh_token, undefined, 'no refresh token in storage');
    const cookie = (await context.cookies()).find((c) => c.name === 'chat_refresh');
    assert.ok(cookie, 'the refresh token is a cookie');
    assert.deepEqual(
      { httpOnly: cookie.httpOnly, secure: cookie.secure, sameSite: cookie.sameSite, path: cookie.path },
      { httpOnly: true, secure: true, sameSite: 'Strict', path: '/api/v1/auth' },
    );
    assert.ok(!JSON.stringify(storage).includes(cookie.value), 'the refresh token is nowhere in storage');
    assert.equal(await page.evaluate(() => document.cookie.includes('chat_refresh')), false, 'scripts cannot read it');

    // A reload with an access token the gateway refuses: the page refreshes
    // through the cookie and stays signed in.
    await page.evaluate(() => {
      const auth = JSON.parse(localStorage.getItem('chat.auth'));
      localStorage.setItem('chat.auth', JSON.stringify({ ...auth, access_token: 'not.a.token' }));
    });
    const refreshed = page.waitForResponse((r) => r.url().endsWith('/api/v1/auth/refresh') && r.status() === 200);
    await page.reload();
    await refreshed;
    await page.locator('#app-view').waitFor();
    await connected(page);
    const after = JSON.parse(await page.evaluate(() => localStorage.getItem('chat.auth')));
    assert.notEqual(after.access_token, 'not.a.token', 'a fresh access token');
    assert.equal(after.refresh_token, undefined);
    const rotated = (await context.cookies()).find((c) => c.name === 'chat_refresh');
    assert.ok(rotated && rotated.value !== cookie.value, 'the cookie was rotated');

    // Log out: the cookie is revoked and cleared.
    const loggedOut = page.waitForResponse((r) => r.url().endsWith('/api/v1/auth/logout'));
    await page.click('#logout-btn');
    assert.equal((await loggedOut).status(), 204);
    await page.locator('#auth-view').waitFor();
    assert.equal((await context.cookies()).find((c) => c.name === 'chat_refresh'), undefined);
    const replay = await page.evaluate(async (token) => {
      const res = await fetch('/api/v1/auth/refresh', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: token }),
      });
      return res.status;
    }, rotated.value);
    assert.equal(replay, 401, 'the logged-out refresh token is revoked');
    assertClean(page, [/WebSocket/, /Failed to load resource/]);
    await context.close();
  });

  test('a network cut mid-reply: no typing while disconnected, then the reply exactly once', async () => {
    const name = username('commuter');
    await stack.register(name);
    const { context, page } = await openPage(browser, stack.url);
    await login(page, name);
    await pickAgent(page, 'slow');
    const words = Array.from({ length: 30 }, (_, i) => `n${i}`).join(' ');
    await send(page, words);
    await page.locator('#stored-list li.live .bubble', { hasText: 'n3' }).waitFor();
    stack.proxy.cut();
    await page.locator('#conn-text', { hasText: /Reconnecting|Offline/ }).waitFor();
    await page.locator('#stored-list li.live .meta', { hasText: 'waiting for the connection' }).waitFor();
    assert.equal(await page.locator('#stored-list li.live .meta', { hasText: 'typing' }).count(), 0);
    await screenshot(page, 'disconnected');
    stack.proxy.restore();
    await waitForReply(page, 'n29');
    assert.deepEqual(await bubbles(page, 'assistant'), [words]);
    assertClean(page, [/WebSocket connection/, /Failed to load resource/, /ERR_/]);
    await context.close();
  });

  test('a stopped reply keeps its place, marked stopped, after newer messages and a reload', async () => {
    const name = username('stopper');
    await stack.register(name);
    const { context, page } = await openPage(browser, stack.url);
    await login(page, name);
    await pickAgent(page, 'slow');
    const words = Array.from({ length: 40 }, (_, i) => `s${i}`).join(' ');
    await send(page, words);
    await page.locator('#stored-list li.live .bubble', { hasText: 's2' }).waitFor();
    await page.click('#cancel-btn');
    const stopped = page.locator('#stored-list li.run-cancelled');
    await stopped.locator('.meta', { hasText: 'stopped' }).waitFor();
    await send(page, 'next one');
    await waitForReply(page, 'next one');
    const order = async () =>
      page.$$eval('#stored-list > li', (nodes) =>
        nodes.map((n) => (n.classList.contains('run-cancelled') ? 'stopped' : n.querySelector('.bubble').innerText.slice(0, 8))),
      );
    assert.deepEqual(await order(), [words.slice(0, 8), 'stopped', 'next one', 'next one']);
    await page.reload();
    await waitForReply(page, 'next one');
    await stopped.locator('.bubble', { hasText: 's2' }).waitFor();
    assert.deepEqual(await order(), [words.slice(0, 8), 'stopped', 'next one', 'next one']);
    await screenshot(page, 'stopped-reply');
    assertClean(page);
    await context.close();
  });

  test('an oversized message is refused before sending and never blocks the queue', async () => {
    const name = username('paster');
    await stack.register(name);
    const { context, page } = await openPage(browser, stack.url);
    await login(page, name);
    await pickAgent(page, 'echo');
    await send(page, 'first');
    await waitForReply(page, 'first');

    // Over the content limit: refused in the page, with the reason; nothing queued.
    await send(page, 'x'.repeat(80 * 1024));
    await page.locator('#composer-error', { hasText: 'too long' }).waitFor();
    assert.equal(await page.locator('#pending-list li').count(), 0);
    await page.fill('#input', 'second');
    await page.press('#input', 'Enter');
    await waitForReply(page, 'second');
    await screenshot(page, 'oversized-refused');
    assertClean(page);
    await context.close();
  });

  test('a frame the server closes with 1009 fails alone, removable, and the queue proceeds', async () => {
    const name = username('bigframe');
    await stack.register(name);
    const { context, page } = await openPage(browser, stack.url);
    // A page that believes the limits are larger than the server's: the
    // server's close (1009) is the only thing that stops the message.
    await page.route('**/api/v1/me', async (route) => {
      const response = await route.fetch();
      const me = await response.json();
      me.limits = { max_content_bytes: 1 << 20, max_ws_frame_bytes: 1 << 20 };
      await route.fulfill({ response, json: me });
    });
    await login(page, name);
    await pickAgent(page, 'echo');
    await send(page, 'hello');
    await waitForReply(page, 'hello');
    await send(page, 'y'.repeat(80 * 1024));
    const failed = page.locator('#pending-list li.send-failed');
    await failed.locator('.meta', { hasText: 'too large' }).waitFor();
    assert.equal(await failed.locator('button', { hasText: 'Retry' }).count(), 0, 'no retry that cannot work');
    await connected(page);
    await send(page, 'after the big one');
    await waitForReply(page, 'after the big one');
    // Still failed after a reload, and it does not block anything.
    await page.reload();
    await connected(page);
    await failed.waitFor();
    await failed.locator('button', { hasText: 'Remove' }).click();
    await failed.waitFor({ state: 'detached' });
    await screenshot(page, 'frame-refused');
    assertClean(page, [/WebSocket/]);
    await context.close();
  });

  test('rename, resolve, end and delete from the header and the list', async () => {
    const name = username('tidy');
    await stack.register(name);
    const { context, page } = await openPage(browser, stack.url);
    await login(page, name);
    await pickAgent(page, 'echo');
    await send(page, 'chat one');
    await waitForReply(page, 'chat one');

    // Rename from the header.
    await page.click('#actions-btn');
    await page.click('#action-menu [data-act="rename"]');
    await page.fill('#dialog-input', 'Renamed chat');
    await page.click('#dialog-ok');
    await page.locator('#chat-title', { hasText: 'Renamed chat' }).waitFor();
    await page.locator('#session-list .session-title', { hasText: 'Renamed chat' }).waitFor();

    // Resolve: the chat shows its state and offers a new one instead of a composer.
    await page.click('#actions-btn');
    await page.click('#action-menu [data-act="resolve"]');
    await page.locator('#closed-bar', { hasText: 'resolved' }).waitFor();
    assert.equal(await page.locator('#composer').isVisible(), false);
    await screenshot(page, 'resolved');

    // A second chat, ended from the list (confirmed), then deleted (confirmed).
    await page.click('#closed-new-btn');
    await send(page, 'chat two');
    await waitForReply(page, 'chat two');
    const row = page.locator('#session-list .session-row', { hasText: 'chat two' });
    await row.locator('[data-menu-for]').click();
    await page.click('#action-menu [data-act="end"]');
    await page.locator('#dialog-title', { hasText: 'End this chat?' }).waitFor();
    await page.click('#dialog-ok');
    await page.locator('#closed-bar', { hasText: 'ended' }).waitFor();
    await row.locator('.session-meta', { hasText: 'ended' }).waitFor();

    await row.locator('[data-menu-for]').click();
    await page.click('#action-menu [data-act="delete"]');
    await page.click('#dialog-cancel');
    assert.equal(await row.count(), 1, 'cancelling keeps the chat');
    await row.locator('[data-menu-for]').click();
    await page.click('#action-menu [data-act="delete"]');
    await page.click('#dialog-ok');
    await row.waitFor({ state: 'detached' });
    await page.reload();
    await page.locator('#session-list .session-title', { hasText: 'Renamed chat' }).waitFor();
    assert.equal(await page.locator('#session-list .session-row', { hasText: 'chat two' }).count(), 0);
    assertClean(page);
    await context.close();
  });

  test('handoff: waiting for a person, an operator takes it and answers live, then hands back', async () => {
    const customer = username('customer');
    const agent = username('operator');
    await stack.register(customer);
    await stack.register(agent);
    await stack.grantOperator(agent);
    const user = await openPage(browser, stack.url);
    const op = await openPage(browser, stack.url);
    await login(user.page, customer);
    await login(op.page, agent);

    await pickAgent(user.page, 'bank');
    await send(user.page, 'I want to speak to a person');
    await user.page.locator('#handoff-bar', { hasText: 'Waiting for a person' }).waitFor();
    await user.page.locator('#stored-list li.note', { hasText: 'Handed over to a person' }).waitFor();
    await screenshot(user.page, 'waiting-for-a-person');

    // The console: the queue, the conversation so far, take it.
    await op.page.click('#console-link');
    const item = op.page.locator('#session-list .session-item', { hasText: customer });
    await item.locator('.session-meta', { hasText: 'waiting' }).waitFor();
    await item.click();
    await op.page.locator('#stored-list li.msg-user', { hasText: 'I want to speak to a person' }).waitFor();
    await op.page.click('#claim-btn');
    await op.page.locator('#composer').waitFor();
    await user.page.locator('#handoff-bar', { hasText: `chatting with ${agent}` }).waitFor();

    // Typing presence, then the reply, live on the user's page.
    await op.page.fill('#input', 'Hello');
    await op.page.type('#input', ', I am here to help.');
    await user.page.locator('#presence', { hasText: `${agent} is typing` }).waitFor();
    await op.page.press('#input', 'Enter');
    const human = user.page.locator('#stored-list li.msg-human', { hasText: 'I am here to help.' });
    await human.waitFor();
    assert.ok((await human.locator('.meta').innerText()).includes(agent));
    await screenshot(op.page, 'operator-console');
    await screenshot(user.page, 'operator-reply');

    // The user's answer reaches the console live.
    await send(user.page, 'My card was stolen');
    await op.page.locator('#stored-list li.msg-user', { hasText: 'My card was stolen' }).waitFor();

    // A reply while the user looks elsewhere shows as unread after a reload.
    await user.page.click('#new-chat-btn');
    await send(op.page, 'I have blocked the card.');
    await op.page.locator('#stored-list li.msg-human', { hasText: 'blocked the card' }).waitFor();
    await user.page.reload();
    await connected(user.page);
    const unread = user.page.locator('#session-list .session-item.unread');
    await unread.waitFor();
    assert.match(await user.page.title(), /^\(1\) /);
    await unread.click();
    await user.page.locator('#stored-list li.msg-human', { hasText: 'blocked the card' }).waitFor();
    await user.page.locator('#session-list .session-item.unread').waitFor({ state: 'detached' });

    // Hand back: the bot answers again.
    await op.page.click('#actions-btn');
    await op.page.click('#action-menu [data-act="hand-back"]');
    await op.page.locator('#claim-bar', { hasText: 'back with the assistant' }).waitFor();
    await user.page.locator('#handoff-bar').waitFor({ state: 'hidden' });
    await send(user.page, 'what are your opening hours');
    await waitForReply(user.page, 'Monday to Friday');
    await screenshot(user.page, 'handed-back');
    assertClean(user.page);
    assertClean(op.page);
    await user.context.close();
    await op.context.close();
  });

  test('a user waiting for a person goes back to the assistant; the console queue is pushed, never polled', async () => {
    const customer = username('waiter');
    const agent = username('desk');
    await stack.register(customer);
    await stack.register(agent);
    await stack.grantOperator(agent);
    const user = await openPage(browser, stack.url);
    const op = await openPage(browser, stack.url);
    let queueReads = 0;
    op.page.on('request', (req) => {
      if (req.method() === 'GET' && new URL(req.url()).pathname === '/api/v1/operator/sessions') queueReads += 1;
    });
    await login(user.page, customer);
    await login(op.page, agent);
    await op.page.click('#console-link');
    await op.page.locator('#sessions-empty', { hasText: 'Nobody is waiting' }).waitFor();

    // The escalation reaches the open console by itself.
    await pickAgent(user.page, 'bank');
    await send(user.page, 'I want to speak to a person');
    const bar = user.page.locator('#handoff-bar');
    await bar.locator('#handoff-text', { hasText: 'Waiting for a person' }).waitFor();
    const item = op.page.locator('#session-list .session-item', { hasText: customer });
    await item.locator('.session-meta', { hasText: 'not taken' }).waitFor();
    await item.click();
    const asked = op.page.locator('#stored-list li.msg-user .bubble', { hasText: 'speak to a person' });
    await asked.waitFor();
    assert.ok((await contrast(asked)) >= 4.5, 'the user\'s words are readable in the console');
    await op.page.click('#claim-btn');
    await item.locator('.session-meta', { hasText: `taken by ${agent}` }).waitFor();
    await bar.locator('#handoff-text', { hasText: `chatting with ${agent}` }).waitFor();
    await screenshot(user.page, 'back-to-the-assistant-offered');

    // The user leaves the person: the assistant answers again, the chat leaves the queue.
    await bar.locator('#handoff-back-btn').click();
    await bar.waitFor({ state: 'hidden' });
    await item.waitFor({ state: 'detached' });
    await op.page.locator('#claim-bar', { hasText: 'back with the assistant' }).waitFor();
    await send(user.page, 'what are your opening hours');
    await waitForReply(user.page, 'Monday to Friday');
    assert.equal(queueReads, 0, 'the console never read the queue over REST while its socket was open');
    await screenshot(op.page, 'console-queue-pushed');
    assertClean(user.page);
    assertClean(op.page);
    await user.context.close();
    await op.context.close();
  });

  test('a reply that uses a tool shows it as a collapsible item: name, arguments, result', async () => {
    const name = username('calc');
    await stack.register(name);
    const { context, page } = await openPage(browser, stack.url);
    await login(page, name);
    await pickAgent(page, 'tools');
    await send(page, 'what is 2+3*4?');

    // Live: the call and its result show while the answer is held back.
    const live = page.locator('#stored-list li.live details.tool');
    await live.locator('summary', { hasText: 'Tool: calculator' }).waitFor();
    assert.equal(await live.evaluate((d) => d.open), false, 'collapsed until opened');
    await live.locator('summary').click();
    await live.locator('pre', { hasText: '2+3*4' }).waitFor();
    await live.locator('pre', { hasText: /^14$/ }).waitFor();
    await screenshot(page, 'tool-call-live');

    // The stored reply carries the same item, still open, under its answer.
    stack.llm.release();
    await waitForReply(page, 'It is 14.');
    const reply = page.locator('#stored-list li.msg-assistant:not(.live)').last();
    assert.equal(await reply.locator('.bubble strong').innerText(), '14');
    const stored = reply.locator('details.tool');
    assert.equal(await stored.evaluate((d) => d.open), true, 'an item the reader opened stays open');
    assert.match(await stored.locator('pre').first().innerText(), /"expression": "2\+3\*4"/);
    assert.equal(await stored.locator('pre').nth(1).innerText(), '14');

    // After a reload: from the stored message, collapsed, and keyboard-operable.
    await page.reload();
    await waitForReply(page, 'It is 14.');
    assert.equal(await stored.evaluate((d) => d.open), false);
    await stored.locator('summary').focus();
    await page.keyboard.press('Enter');
    await stored.locator('pre', { hasText: /^14$/ }).waitFor();
    await screenshot(page, 'tool-call-stored');
    assertClean(page);
    await context.close();
  });

  test('markdown streams into one bubble re-rendered in place, final and with injected HTML inert', async () => {
    const name = username('reader');
    await stack.register(name);
    const { context, page } = await openPage(browser, stack.url);
    await login(page, name);
    await pickAgent(page, 'writer');
    await send(page, 'write me a plan');

    const bubble = page.locator('#stored-list li.live .bubble');
    await bubble.locator('h2', { hasText: 'Plan' }).waitFor();
    const first = await bubble.elementHandle();
    const same = () => first.evaluate((b) => b.isConnected && b === document.querySelector('#stored-list li.live .bubble'));

    // Each part re-renders the markdown into the same element.
    stack.llm.release();
    await bubble.locator('li', { hasText: 'second' }).waitFor();
    assert.ok(await same(), 'the bubble was not replaced by the second part');
    assert.equal(await bubble.locator('li').count(), 2);
    stack.llm.release();
    await bubble.locator('pre code', { hasText: 'const a = 1;' }).waitFor();
    assert.ok(await same(), 'the bubble was not replaced by the third part');
    assert.equal(await bubble.locator('strong').innerText(), 'second', 'the finished emphasis renders');
    assert.equal(await bubble.locator('img, script').count(), 0, 'raw HTML never becomes elements while streaming');
    await screenshot(page, 'markdown-streaming');

    // The stored reply: the same markdown, final; nothing injected ran.
    stack.llm.release();
    const reply = page.locator('#stored-list li.msg-assistant:not(.live)').last();
    await reply.locator('h2', { hasText: 'Plan' }).waitFor();
    assert.equal(await page.locator('#stored-list li.live').count(), 0);
    assert.equal(await reply.locator('li').count(), 2);
    assert.equal(await reply.locator('strong').innerText(), 'second');
    assert.equal(await reply.locator('pre code').innerText(), 'const a = 1;\n');
    assert.equal(await reply.locator('img, script').count(), 0);
    assert.ok((await reply.innerText()).includes('<img src=x'), 'raw HTML is shown as text');
    assert.equal(await page.evaluate(() => window.__xss), undefined, 'no injected script ran');
    assertClean(page);
    await context.close();
  });

  test('on a phone: 16 px input, 44 px targets, connection state in words', async () => {
    const name = username('mobile');
    await stack.register(name);
    const { context, page } = await openPage(browser, stack.url, {
      viewport: { width: 390, height: 844 },
      isMobile: true,
      hasTouch: true,
      deviceScaleFactor: 2,
    });
    await login(page, name);
    assert.equal(await page.$eval('#input', (e) => getComputedStyle(e).fontSize), '16px');
    assert.ok(await page.locator('#conn-text').isVisible(), 'the connection state is text, not only a colour');
    assert.equal((await page.locator('#conn-text').innerText()).trim(), 'Connected');
    const small = await page.$$eval('button, a.btn, select', (nodes) =>
      nodes
        .filter((n) => n.offsetParent !== null)
        .map((n) => ({ n: n.id || n.textContent.trim(), r: n.getBoundingClientRect() }))
        .filter(({ r }) => r.width < 44 || r.height < 44)
        .map(({ n, r }) => `${n} ${Math.round(r.width)}x${Math.round(r.height)}`),
    );
    assert.deepEqual(small, [], 'every visible control is at least 44 px square');
    await page.click('#menu-btn');
    await page.locator('#sidebar #new-chat-btn').waitFor();
    await screenshot(page, 'mobile');
    assertClean(page);
    await context.close();
  });
});
