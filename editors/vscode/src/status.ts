// What the status-bar item shows for the server's `inkling/status`: kept apart from
// the extension (no `vscode` import) so the node test can check it.

export interface ModelStatus {
  state: 'loading' | 'ready' | 'failed';
  message: string;
  percent: number | null;
  // Where the last answer came from; sent only while a remote engine is configured.
  lastAnswerFrom?: 'local' | 'remote';
}

export interface StatusView {
  text: string;
  tooltip: string;
  error: boolean;
}

// The item for `model` (with `lastAnswerFrom` the latest one the server sent) and
// whether completions are on.
export function statusView(
  model: ModelStatus,
  lastAnswerFrom: ModelStatus['lastAnswerFrom'],
  enabled: boolean,
): StatusView {
  if (!enabled) {
    return {
      text: '$(circle-slash) inkling',
      tooltip: 'inkling: completions off (click to turn on)',
      error: false,
    };
  }
  let text = '$(sparkle) inkling';
  if (model.state === 'loading') {
    text = '$(loading~spin) inkling' + (model.percent !== null ? ` ${model.percent}%` : '');
  } else if (model.state === 'failed') {
    text = '$(error) inkling';
  }
  let tooltip = `inkling: ${model.message}`;
  if (lastAnswerFrom === 'remote') {
    text += ' $(cloud)';
    tooltip += '; last suggestion from the remote engine';
  } else if (lastAnswerFrom === 'local') {
    tooltip += '; last suggestion from the local model';
  }
  return {
    text,
    tooltip: `${tooltip} (click to turn completions off)`,
    error: model.state === 'failed',
  };
}
