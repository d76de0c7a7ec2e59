// Drives the real inkling server the way the extension's language client does:
// vscode-jsonrpc over the child's stdio, VS Code's client capabilities, one
// didChange + inlineCompletion per keystroke, and a $/cancelRequest for every
// request the next keystroke supersedes (vscode-jsonrpc sends it when the
// request's cancellation token fires, exactly as in VS Code). Accepting runs the
// extension's own acceptance reporter (src/acceptance.ts, built by `npm test`).
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const protocol = require('vscode-languageserver-protocol/node');
const { AcceptanceReporter, ACCEPT_COMMAND } = require('../dist/acceptance.js');
const { statusView } = require('../dist/status.js');

const SERVER =
  process.env.INKLING_BIN ?? path.join(__dirname, '..', '..', '..', 'target', 'release', 'inkling');
const URI = 'file:///tmp/inkling-vscode-test/greet.py';
const TEXT = 'def greet(name):\n    return "👋 " + name\n\n\ndef shout(name):\n';
// Typed on the last line. The emoji is one keystroke but two UTF-16 units, so the
// positions after it only line up if the server counts in UTF-16 as negotiated.
const TYPED = [...'    return "👋 " + name.'];
const KEYSTROKE_MS = 40;
const LINE = 5;

let server;
let connection;
let initializeResult;
const statuses = [];
const progress = [];
const messages = [];
let progressCreated = false;

function waitFor(what, predicate, timeoutMs) {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + timeoutMs;
    const poll = () => {
      if (predicate()) resolve();
      else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(poll, 20);
    };
    poll();
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

before(async () => {
  server = spawn(SERVER, ['--stdio'], { stdio: ['pipe', 'pipe', 'inherit'] });
  connection = protocol.createProtocolConnection(
    new protocol.StreamMessageReader(server.stdout),
    new protocol.StreamMessageWriter(server.stdin),
  );
  connection.onNotification('inkling/status', (params) => statuses.push(params));
  connection.onNotification(protocol.ShowMessageNotification.type, (params) =>
    messages.push(params),
  );
  connection.onRequest(protocol.WorkDoneProgressCreateRequest.type, () => {
    progressCreated = true;
    return null;
  });
  // `$/progress` for a token the server created is "unhandled" in vscode-jsonrpc's terms.
  connection.onUnhandledProgress((params) => progress.push(params));
  connection.listen();

  initializeResult = await connection.sendRequest(protocol.InitializeRequest.type, {
    processId: process.pid,
    rootUri: null,
    capabilities: {
      general: { positionEncodings: ['utf-16'] },
      window: { workDoneProgress: true, showMessage: {} },
      textDocument: {
        synchronization: { dynamicRegistration: true, didSave: true },
        inlineCompletion: { dynamicRegistration: true },
      },
    },
    // What the extension sends for a user who set inkling.maxTokens.
    initializationOptions: { maxTokens: 32 },
  });
  await connection.sendNotification(protocol.InitializedNotification.type, {});
});

after(async () => {
  connection?.dispose();
  server?.kill();
});

test('the server offers incremental sync, UTF-16, inline completion and the accept command', () => {
  const { capabilities } = initializeResult;
  assert.ok(capabilities.inlineCompletionProvider, 'inlineCompletionProvider');
  // The language client registers these as VS Code commands that call the server.
  assert.deepEqual(capabilities.executeCommandProvider.commands, [ACCEPT_COMMAND]);
  assert.ok(
    [undefined, 'utf-16'].includes(capabilities.positionEncoding),
    capabilities.positionEncoding,
  );
  assert.equal(capabilities.textDocumentSync.change, protocol.TextDocumentSyncKind.Incremental);
});

test('inkling/status and $/progress report loading, then ready', async () => {
  await waitFor(
    'a ready or failed status',
    () => statuses.some((s) => s.state !== 'loading'),
    60_000,
  );
  const states = statuses.map((s) => s.state);
  assert.equal(states[0], 'loading', JSON.stringify(statuses));
  assert.equal(states.at(-1), 'ready', JSON.stringify(statuses));
  assert.ok(
    states.slice(0, -1).every((s) => s === 'loading'),
    JSON.stringify(statuses),
  );
  for (const { message, percent } of statuses) {
    assert.equal(typeof message, 'string');
    assert.ok(percent === null || (percent >= 0 && percent <= 100), JSON.stringify(statuses));
  }
  assert.ok(progressCreated, 'window/workDoneProgress/create was not sent');
  const kinds = progress.map((p) => p.value.kind);
  assert.equal(kinds[0], 'begin', JSON.stringify(progress));
  assert.equal(kinds.at(-1), 'end', JSON.stringify(progress));
  assert.deepEqual(messages, [], 'the initializationOptions were not accepted');
});

test(
  'typing: superseded requests are cancelled, answers are at their cursor, the last one gets a suggestion',
  { timeout: 120_000 },
  async () => {
    await connection.sendNotification(protocol.DidOpenTextDocumentNotification.type, {
      textDocument: { uri: URI, languageId: 'python', version: 1, text: TEXT },
    });
    const requests = [];
    let character = 0;
    for (const [i, key] of TYPED.entries()) {
      const at = { line: LINE, character };
      character += key.length; // UTF-16 units, as VS Code counts
      await connection.sendNotification(protocol.DidChangeTextDocumentNotification.type, {
        textDocument: { uri: URI, version: i + 2 },
        contentChanges: [{ range: { start: at, end: at }, rangeLength: 0, text: key }],
      });
      const previous = requests.at(-1);
      if (previous && !previous.settled) {
        previous.superseded = true;
        previous.source.cancel();
      }
      const request = {
        position: { line: LINE, character },
        source: new protocol.CancellationTokenSource(),
        sentAt: Date.now(),
      };
      request.outcome = connection
        .sendRequest(
          protocol.InlineCompletionRequest.type,
          {
            textDocument: { uri: URI },
            position: request.position,
            context: { triggerKind: protocol.InlineCompletionTriggerKind.Automatic },
          },
          request.source.token,
        )
        .then(
          (result) => ({ result }),
          (error) => ({ error }),
        )
        .finally(() => {
          request.settled = true;
          request.ms = Date.now() - request.sentAt;
        });
      requests.push(request);
      await sleep(KEYSTROKE_MS);
    }

    const outcomes = await Promise.all(requests.map((r) => r.outcome));
    const superseded = requests.filter((r) => r.superseded);
    assert.ok(
      superseded.length > 0,
      'every request was answered before the next keystroke: nothing was cancelled',
    );
    const itemsOf = (result) => (Array.isArray(result) ? result : result?.items) ?? [];
    const cancelled = (outcome) =>
      outcome.error?.code === protocol.LSPErrorCodes.RequestCancelled;
    for (const [i, request] of requests.entries()) {
      const outcome = outcomes[i];
      if (request.superseded && cancelled(outcome)) {
        continue;
      }
      // Not superseded, or answered before its $/cancelRequest reached the server (VS
      // Code then drops the late answer): a valid answer for its own cursor.
      assert.equal(outcome.error, undefined, `request ${i}: ${outcome.error?.message}`);
      for (const item of itemsOf(outcome.result)) {
        assert.deepEqual(item.range, { start: request.position, end: request.position });
      }
    }
    assert.ok(
      superseded.some((r) => cancelled(outcomes[requests.indexOf(r)])),
      'no superseded request was cancelled',
    );

    const last = outcomes.at(-1).result;
    assert.ok(itemsOf(last).length > 0, `no suggestion at the end: ${JSON.stringify(last)}`);
    const [item] = itemsOf(last);
    const text = typeof item.insertText === 'string' ? item.insertText : item.insertText.value;
    assert.ok(text.trim().length > 0, `empty suggestion: ${JSON.stringify(item)}`);
    const errors = outcomes.filter((o) => o.error).length;
    console.log(
      `${requests.length} requests, ${superseded.length} superseded (${errors} ended -32800)`,
    );
    console.log(`the last request was answered in ${requests.at(-1).ms} ms`);
    console.log(`suggestion after ${JSON.stringify(TYPED.join(''))}: ${JSON.stringify(text)}`);

    const stats = await connection.sendRequest('inkling/stats');
    assert.equal(stats.requests, requests.length, JSON.stringify(stats));
    assert.ok(stats.cancelled >= 1, JSON.stringify(stats));
  },
);

// Where the cursor is after `text` is inserted at `at` (UTF-16 columns).
function positionAfter(at, text) {
  const lines = text.split('\n');
  const last = lines.at(-1).length;
  return lines.length === 1
    ? { line: at.line, character: at.character + last }
    : { line: at.line + lines.length - 1, character: last };
}

// VS Code's Accept Next Word (`acceptNextWord`, default word definition): the word
// the text starts with, or what comes before its first word, but no further than the
// end of its first run of white space.
function nextWord(text) {
  const word = /[\p{L}\p{N}_]+/u.exec(text);
  let end = word === null ? text.length : word.index === 0 ? word[0].length : word.index;
  const space = /\s+/.exec(text);
  if (space !== null) {
    end = Math.min(end, space.index + space[0].length);
  }
  return text.slice(0, end);
}

test(
  'accepting: a word (answered from memory), then the rest; the reports are counted',
  { timeout: 120_000 },
  async () => {
    const uri = 'file:///tmp/inkling-vscode-test/mean.py';
    const text = 'def mean(values):\n    total = sum(values)\n    return ';
    const cursor = { line: 2, character: 11 };
    await connection.sendNotification(protocol.DidOpenTextDocumentNotification.type, {
      textDocument: { uri, languageId: 'python', version: 1, text },
    });
    const sent = [];
    const reporter = new AcceptanceReporter((method, params) => {
      sent.push({ method, params });
      connection.sendNotification(method, params);
    });
    const itemsOf = (result) => (Array.isArray(result) ? result : result?.items) ?? [];
    // What the extension's middleware does with each answer it hands to VS Code.
    const ask = async (position, triggerKind) => {
      const result = await connection.sendRequest(protocol.InlineCompletionRequest.type, {
        textDocument: { uri },
        position,
        context: { triggerKind },
      });
      const items = itemsOf(result);
      reporter.answered(uri, position, items);
      assert.ok(items.length > 0, `no suggestion at ${JSON.stringify(position)}`);
      return items[0];
    };
    let version = 1;
    // VS Code applies an accept as one edit; the extension sees it as a change.
    const insert = async (at, inserted) => {
      const change = { range: { start: at, end: at }, rangeLength: 0, text: inserted };
      await connection.sendNotification(protocol.DidChangeTextDocumentNotification.type, {
        textDocument: { uri, version: ++version },
        contentChanges: [change],
      });
      reporter.changed(uri, [change]);
    };

    // Alt+\ (invoked), then Ctrl+→ (Accept Word).
    const item = await ask(cursor, protocol.InlineCompletionTriggerKind.Invoked);
    const { insertText: suggestion, command } = item;
    assert.equal(command.command, ACCEPT_COMMAND, JSON.stringify(item));
    const [id] = command.arguments;
    assert.deepEqual(Object.keys(id).sort(), ['answer', 'item'], JSON.stringify(item));
    const word = nextWord(suggestion);
    assert.ok(
      [...word].length >= 2 && word.length < suggestion.length,
      `not a suggestion of several words: ${JSON.stringify(suggestion)}`,
    );
    const before = await connection.sendRequest('inkling/stats');
    await insert(cursor, word);
    // VS Code asks again at once, at the cursor after the word.
    const rest = await ask(positionAfter(cursor, word), protocol.InlineCompletionTriggerKind.Automatic);
    assert.equal(rest.insertText, suggestion.slice(word.length));
    const afterWord = await connection.sendRequest('inkling/stats');
    assert.equal(afterWord.typedThrough, before.typedThrough + 1, JSON.stringify(afterWord));
    assert.equal(afterWord.generatedTokens, before.generatedTokens, 'the model was asked');
    assert.equal(afterWord.acceptance.partlyAccepted, 1, JSON.stringify(afterWord.acceptance));

    // Tab: VS Code inserts the rest and runs the item's command, which the language
    // client sends to the server.
    await insert(positionAfter(cursor, word), rest.insertText);
    await connection.sendRequest(protocol.ExecuteCommandRequest.type, {
      command: rest.command.command,
      arguments: rest.command.arguments,
    });

    // The exact messages the extension sent.
    assert.deepEqual(sent, [
      { method: 'inkling/didShow', params: id },
      { method: 'inkling/didAccept', params: { ...id, acceptedLength: [...word].length } },
      { method: 'inkling/didShow', params: rest.command.arguments[0] },
    ]);
    const { acceptance } = await connection.sendRequest('inkling/stats');
    const counts = ({ shown, accepted, partlyAccepted, dismissed, charactersAccepted }) => ({
      shown,
      accepted,
      partlyAccepted,
      dismissed,
      charactersAccepted,
    });
    const expected = {
      shown: 1,
      accepted: 1,
      partlyAccepted: 0,
      dismissed: 0,
      charactersAccepted: [...suggestion].length,
    };
    assert.deepEqual(counts(acceptance), expected, JSON.stringify(acceptance));
    assert.deepEqual(counts(acceptance.invoked), expected, JSON.stringify(acceptance));
    assert.equal(acceptance.acceptanceRate, 1);
    const kind = suggestion.includes('\n') ? 'multiLine' : 'singleLine';
    assert.deepEqual(counts(acceptance[kind]), expected, JSON.stringify(acceptance));
    console.log(`accepted ${JSON.stringify(word)} + ${JSON.stringify(rest.insertText)}`);
  },
);

test('the status item says where the last suggestion came from, only with a remote engine', () => {
  // This server has no remote engine: after all the completions above, no status
  // named a source, and the item shows the model alone.
  assert.ok(statuses.length > 0);
  assert.ok(
    statuses.every((s) => s.lastAnswerFrom === undefined),
    JSON.stringify(statuses),
  );
  const ready = statuses.at(-1);
  assert.equal(statusView(ready, undefined, true).text, '$(sparkle) inkling');
  // The server's status after a remote answer (tests/tests/remote.rs checks it sends
  // this), then the local model's again.
  const remote = statusView({ ...ready, lastAnswerFrom: 'remote' }, 'remote', true);
  assert.equal(remote.text, '$(sparkle) inkling $(cloud)');
  assert.match(remote.tooltip, /last suggestion from the remote engine/);
  const local = statusView(ready, 'local', true);
  assert.equal(local.text, '$(sparkle) inkling');
  assert.match(local.tooltip, /last suggestion from the local model/);
  assert.equal(statusView(ready, 'remote', false).text, '$(circle-slash) inkling');
  assert.ok(statusView({ state: 'failed', message: 'x', percent: null }, undefined, true).error);
});

test('shutdown and exit end the server with status 0', async () => {
  const exited = new Promise((resolve) => server.once('exit', (code) => resolve(code)));
  await connection.sendRequest(protocol.ShutdownRequest.type);
  await connection.sendNotification(protocol.ExitNotification.type);
  assert.equal(await exited, 0);
});
