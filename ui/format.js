// Number formatting shared by the pages.

const PER_MILLION = 1_000_000;

/** USD per token (decimal string or number) -> USD per 1M tokens, or null if unknown. */
export function perMillion(price) {
  if (price === null || price === undefined || price === '') return null;
  const n = Number(price);
  return Number.isFinite(n) ? n * PER_MILLION : null;
}

/** "$2.50", "$0.15", "$0.075", "free", "—". */
export function fmtPrice(perM) {
  if (perM === null || perM === undefined) return '—';
  if (perM === 0) return 'free';
  const digits = perM >= 1 ? 2 : perM >= 0.1 ? 2 : 3;
  return `$${perM.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: digits })}`;
}

/** 128000 -> "128K", 1000000 -> "1M", 131072 -> "131K". */
export function fmtTokensShort(n) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return '—';
  const v = Number(n);
  if (v >= 1_000_000) return `${trim(v / 1_000_000)}M`;
  if (v >= 1_000) return `${trim(v / 1_000)}K`;
  return String(v);
}

function trim(x) {
  return x >= 100 ? String(Math.round(x)) : String(Math.round(x * 10) / 10);
}

/** 1234567 -> "1,234,567". */
export function fmtInt(n) {
  const v = Number(n);
  return Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : '—';
}

/** A cost in USD: "$12.35", "$0.042", "$0.00042", "$0.00". */
export function fmtCost(c) {
  if (c === null || c === undefined || c === '') return '—';
  const v = Number(c);
  if (!Number.isFinite(v)) return '—';
  if (v === 0) return '$0.00';
  if (Math.abs(v) >= 1) return `$${v.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
  return `$${v.toLocaleString('en-US', { maximumSignificantDigits: 3 })}`;
}

/** "2026-11-25T10:00:00Z" -> a short local date/time. */
export function fmtDate(iso) {
  if (!iso) return 'never';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

/** The creator part of a model id: "openai/gpt-4o" -> "openai". */
export function creatorOf(id) {
  const i = String(id || '').indexOf('/');
  return i > 0 ? id.slice(0, i) : String(id || '');
}
