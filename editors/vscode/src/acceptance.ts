// What the extension tells inkling about its suggestions, for the server's local
// acceptance statistics (`inkling/stats`; they never leave the machine).
//
// VS Code's stable API tells an extension neither when an inline suggestion is shown
// nor when part of it is accepted (those hooks are proposed API, closed to extensions
// from the Marketplace), so:
// - shown: the first item of each answer handed to VS Code, the one it shows;
// - accepted whole: nothing here. VS Code runs the item's own command on accept, and
//   the language client sends it to the server as `workspace/executeCommand`;
// - partly accepted (Accept Word, Accept Line, whatever the key or button): a single
//   insertion, where the shown item is, of two or more characters the item goes on
//   with. Typing inserts one character at a time.
//
// No `vscode` import: the node test drives the real server with this very code.

// An item's identity, as inkling puts it in the item's command.
export interface SuggestionId {
  answer: number;
  item: number;
}

interface Position {
  line: number;
  character: number;
}

// A document change, as VS Code and LSP both shape it.
interface Change {
  range: { start: Position; end: Position };
  text: string;
}

// An inline completion item, as VS Code and LSP both shape it.
interface Item {
  insertText: string | { value: string };
  command?: { command: string; arguments?: unknown[] };
}

export type Notify = (method: string, params: object) => void;

// The item VS Code shows, and how much of its start is in the document since.
interface Shown {
  uri: string;
  at: Position;
  text: string;
  id: SuggestionId;
  inserted: string;
}

export const ACCEPT_COMMAND = 'inkling.didAccept';

// The identity inkling gave `item` (its command's argument), if any.
export function suggestionId(item: Item): SuggestionId | undefined {
  const argument = item.command?.command === ACCEPT_COMMAND ? item.command.arguments?.[0] : undefined;
  if (typeof argument !== 'object' || argument === null) {
    return undefined;
  }
  const { answer, item: index } = argument as Record<string, unknown>;
  return typeof answer === 'number' && typeof index === 'number'
    ? { answer, item: index }
    : undefined;
}

// Where `position` is after `text` is inserted there (UTF-16 columns, as VS Code).
function after(position: Position, text: string): Position {
  const lines = text.split('\n');
  const last = lines[lines.length - 1];
  return lines.length === 1
    ? { line: position.line, character: position.character + last.length }
    : { line: position.line + lines.length - 1, character: last.length };
}

const characters = (text: string): number => [...text].length;

export class AcceptanceReporter {
  private shown: Shown | undefined;

  constructor(private readonly notify: Notify) {}

  // An answer at `position` of `uri` was handed to VS Code, which shows its first item.
  answered(uri: string, position: Position, items: readonly Item[]): void {
    this.shown = undefined;
    const first = items[0];
    const id = first && suggestionId(first);
    if (!id) {
      return;
    }
    const text = typeof first.insertText === 'string' ? first.insertText : first.insertText.value;
    this.shown = { uri, at: position, text, id, inserted: '' };
    this.notify('inkling/didShow', id);
  }

  // `uri` changed: a partial accept of the shown item is reported.
  changed(uri: string, changes: readonly Change[]): void {
    const shown = this.shown;
    if (!shown || shown.uri !== uri) {
      return;
    }
    const [change] = changes;
    const at = after(shown.at, shown.inserted);
    const inserted = shown.inserted + (change?.text ?? '');
    const continues =
      changes.length === 1 &&
      change.range.start.line === at.line &&
      change.range.start.character === at.character &&
      change.range.end.line === at.line &&
      change.range.end.character === at.character &&
      shown.text.startsWith(inserted);
    if (!continues || inserted === shown.text) {
      // Something else changed, or the whole item was accepted (its command reports
      // that) or typed.
      this.shown = undefined;
      return;
    }
    shown.inserted = inserted;
    if (characters(change.text) >= 2) {
      this.notify('inkling/didAccept', { ...shown.id, acceptedLength: characters(inserted) });
    }
  }
}
