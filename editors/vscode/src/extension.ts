// The inkling extension: starts the inkling language server and lets
// vscode-languageclient (11 speaks LSP 3.18 inline completion natively) turn its
// answers into ghost text. This file only adds what the client cannot know:
// settings → initializationOptions, a status-bar item fed by the server's
// `inkling/status` notification, a command to switch completions off and on, and
// reports of suggestions shown and partly accepted for the server's local
// statistics (acceptance.ts), and where the cursor is when a file becomes active or
// the cursor moves far (`inkling/didFocus`), so the server decodes the prompt there
// before the first keystroke.
import * as vscode from 'vscode';
import {
  LanguageClient,
  NotificationType,
  State,
  TransportKind,
  type LanguageClientOptions,
  type ServerOptions,
} from 'vscode-languageclient/node';
import { AcceptanceReporter } from './acceptance';
import { statusView, type ModelStatus } from './status';


const statusNotification = new NotificationType<ModelStatus>('inkling/status');

// Settings passed to the server under the same names. The server rejects the whole
// object on an unknown key or an invalid value, so only what the user set is sent.
const SERVER_SETTINGS = ['model', 'contextSize', 'threads', 'maxTokens', 'remote'] as const;

const ENABLED_KEY = 'inkling.enabled';

let client: LanguageClient | undefined;
let statusItem: vscode.StatusBarItem;
let enabled = true;
let model: ModelStatus = { state: 'loading', message: 'starting the server', percent: null };
// Where the last answer came from, kept across status updates that do not say.
let lastAnswerFrom: ModelStatus['lastAnswerFrom'];
// Reports go to whichever server runs; one restarted since ignores ids it never gave.
const reporter = new AcceptanceReporter((method, params) => {
  client?.sendNotification(method, params).catch(() => undefined);
});

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  enabled = context.globalState.get(ENABLED_KEY, true);
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  statusItem.command = 'inkling.toggle';
  statusItem.show();
  context.subscriptions.push(
    statusItem,
    vscode.commands.registerCommand('inkling.toggle', async () => {
      enabled = !enabled;
      await context.globalState.update(ENABLED_KEY, enabled);
      if (!enabled) {
        await vscode.commands.executeCommand('editor.action.inlineSuggest.hide');
      }
      render();
    }),
    // initializationOptions are read once, at start: a changed setting needs a new server.
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration('inkling')) {
        await stop();
        await start();
      }
    }),
    vscode.workspace.onDidChangeTextDocument((event) =>
      reporter.changed(event.document.uri.toString(), event.contentChanges),
    ),
    vscode.window.onDidChangeActiveTextEditor((editor) => {
      focusedLine = undefined;
      scheduleFocus(editor);
    }),
    vscode.window.onDidChangeTextEditorSelection((event) => scheduleFocus(event.textEditor)),
  );
  await start();
}

export function deactivate(): Promise<void> {
  return stop();
}

async function start(): Promise<void> {
  const config = vscode.workspace.getConfiguration('inkling');
  const serverOptions: ServerOptions = {
    command: config.get<string>('serverPath') || 'inkling',
    transport: TransportKind.stdio,
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
    initializationOptions: initializationOptions(config),
    middleware: {
      // (The server offers textDocument/completion only to clients without inline
      // completion, so this is the one provider to switch.)
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        if (!enabled) {
          return null;
        }
        const result = await next(document, position, context, token);
        if (!token.isCancellationRequested) {
          const items: readonly vscode.InlineCompletionItem[] = Array.isArray(result)
            ? result
            : (result?.items ?? []);
          reporter.answered(document.uri.toString(), position, items);
        }
        return result;
      },
    },
  };
  const next = new LanguageClient('inkling', 'inkling', serverOptions, clientOptions);
  client = next;
  next.onNotification(statusNotification, (status) => {
    model = status;
    lastAnswerFrom = status.lastAnswerFrom ?? lastAnswerFrom;
    render();
  });
  next.onDidChangeState(({ newState }) => {
    if (newState === State.Stopped && client === next) {
      model = { state: 'failed', message: 'the server stopped', percent: null };
      render();
    }
  });
  model = { state: 'loading', message: 'starting the server', percent: null };
  lastAnswerFrom = undefined;
  render();
  try {
    await next.start();
    focusedLine = undefined;
    scheduleFocus(vscode.window.activeTextEditor);
  } catch (error) {
    // The client has already shown the error; the status bar keeps it visible.
    model = { state: 'failed', message: String(error), percent: null };
    render();
  }
}

// How far (in lines) the cursor moves before the server hears of it again.
const FOCUS_LINES = 20;
let focusTimer: NodeJS.Timeout | undefined;
let focusedLine: { uri: string; line: number } | undefined;

// Reports the cursor of `editor` after a 200 ms pause, unless the server already
// knows a position within FOCUS_LINES of it in the same file.
function scheduleFocus(editor: vscode.TextEditor | undefined): void {
  clearTimeout(focusTimer);
  if (!editor || !enabled) {
    return;
  }
  focusTimer = setTimeout(() => {
    const current = client;
    if (!current || current.state !== State.Running) {
      return;
    }
    const uri = editor.document.uri.toString();
    const position = editor.selection.active;
    if (focusedLine?.uri === uri && Math.abs(focusedLine.line - position.line) < FOCUS_LINES) {
      return;
    }
    focusedLine = { uri, line: position.line };
    const params = current.code2ProtocolConverter.asTextDocumentPositionParams(
      editor.document,
      position,
    );
    current.sendNotification('inkling/didFocus', params).catch(() => undefined);
  }, 200);
}

async function stop(): Promise<void> {
  const current = client;
  client = undefined;
  await current?.dispose();
}

function initializationOptions(config: vscode.WorkspaceConfiguration): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const key of SERVER_SETTINGS) {
    const value = config.get(key);
    if (value !== null && value !== undefined && value !== '') {
      options[key] = value;
    }
  }
  return options;
}

function render(): void {
  const view = statusView(model, lastAnswerFrom, enabled);
  statusItem.text = view.text;
  statusItem.tooltip = view.tooltip;
  statusItem.backgroundColor = view.error
    ? new vscode.ThemeColor('statusBarItem.errorBackground')
    : undefined;
}
