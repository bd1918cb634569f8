// A minimal Server-Sent Events parser for fetch() bodies (EventSource cannot POST or send an
// Authorization header). Feed it decoded text; it calls onEvent(data) once per event with the
// joined `data:` lines. Handles \n, \r\n and \r line ends split across chunks.

export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buf = '';
    this.data = [];
  }

  push(text) {
    this.buf += text;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buf);
      if (!m) break;
      // A lone \r at the very end may be the first half of \r\n: wait for the next chunk.
      if (m[0] === '\r' && m.index === this.buf.length - 1) break;
      const line = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      this.line(line);
    }
  }

  /** End of input: a last event without its blank line still counts. */
  end() {
    if (this.buf) this.line(this.buf);
    this.buf = '';
    this.line('');
  }

  line(line) {
    if (line === '') {
      if (this.data.length) {
        const data = this.data.join('\n');
        this.data = [];
        this.onEvent(data);
      }
      return;
    }
    if (line.startsWith(':')) return; // comment / keep-alive
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? '' : line.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
  }
}
