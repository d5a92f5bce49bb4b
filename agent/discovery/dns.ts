// The DNS side of discovery, as pure functions: a wire codec (RFC 1035 messages, A/SRV/SOA data,
// EDNS0 OPT, name compression) and `respond`, which answers one query for the `flotilla` zone
// from in-memory records. Sockets live in server.ts.
//
// Names are in presentation form without the trailing dot ("web.service.flotilla"); a label byte
// that is "." or "\", or not printable ASCII, is escaped ("\." "\\" "\DDD"), so any name on the
// wire survives a decode/encode round-trip byte for byte — the question is echoed exactly as
// asked, which resolvers that randomise the case of names (0x20) check.

import type { ServiceRecord } from "./record.js";

export const TYPE = {
  A: 1,
  NS: 2,
  SOA: 6,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  IXFR: 251,
  AXFR: 252,
  ANY: 255,
} as const;
export const CLASS_IN = 1;
export const OPCODE_QUERY = 0;
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
/** EDNS0 extended rcode 16: the upper 8 bits (1) go in the OPT record, the lower 4 (0) in the header. */
const BADVERS_UPPER = 1;

export const ZONE = "flotilla";
export const DEFAULT_TTL = 5;
/** Plain DNS over UDP (RFC 1035). */
export const UDP_MIN = 512;
/** The EDNS0 payload size we accept and advertise (DNS flag day 2020: avoids IP fragmentation). */
export const EDNS_UDP_MAX = 1232;
const MAX_MESSAGE = 65535;
const MAX_NAME_WIRE = 255;
const MAX_LABEL = 63;

export interface Question {
  name: string;
  type: number;
  class: number;
}

export type RData =
  | { kind: "A"; address: string }
  | { kind: "SRV"; priority: number; weight: number; port: number; target: string }
  | {
      kind: "SOA";
      mname: string;
      rname: string;
      serial: number;
      refresh: number;
      retry: number;
      expire: number;
      minimum: number;
    }
  | { kind: "raw"; bytes: Buffer };

/** For OPT (type 41) `class` is the UDP payload size and `ttl` holds the extended rcode and flags. */
export interface ResourceRecord {
  name: string;
  type: number;
  class: number;
  ttl: number;
  data: RData;
}

export interface DnsMessage {
  id: number;
  qr: boolean;
  opcode: number;
  aa: boolean;
  tc: boolean;
  rd: boolean;
  ra: boolean;
  rcode: number;
  questions: Question[];
  answers: ResourceRecord[];
  authority: ResourceRecord[];
  additional: ResourceRecord[];
}

export class DnsFormatError extends Error {}

// ---- decoding

/** Decodes a whole message; throws DnsFormatError on anything malformed or trailing. */
export function decodeMessage(buf: Buffer): DnsMessage {
  if (buf.length < 12) throw new DnsFormatError("message shorter than its header");
  const flags = buf.readUInt16BE(2);
  const counts = [buf.readUInt16BE(4), buf.readUInt16BE(6), buf.readUInt16BE(8), buf.readUInt16BE(10)];
  let pos = 12;
  const questions: Question[] = [];
  for (let i = 0; i < (counts[0] ?? 0); i++) {
    const { name, next } = readName(buf, pos);
    need(buf, next, 4);
    questions.push({ name, type: buf.readUInt16BE(next), class: buf.readUInt16BE(next + 2) });
    pos = next + 4;
  }
  const sections: ResourceRecord[][] = [[], [], []];
  for (let s = 0; s < 3; s++) {
    for (let i = 0; i < (counts[s + 1] ?? 0); i++) {
      const { record, next } = readRecord(buf, pos);
      sections[s]?.push(record);
      pos = next;
    }
  }
  if (pos !== buf.length) throw new DnsFormatError("trailing bytes after the last record");
  return {
    id: buf.readUInt16BE(0),
    qr: (flags & 0x8000) !== 0,
    opcode: (flags >> 11) & 0xf,
    aa: (flags & 0x0400) !== 0,
    tc: (flags & 0x0200) !== 0,
    rd: (flags & 0x0100) !== 0,
    ra: (flags & 0x0080) !== 0,
    rcode: flags & 0xf,
    questions,
    answers: sections[0] ?? [],
    authority: sections[1] ?? [],
    additional: sections[2] ?? [],
  };
}

function need(buf: Buffer, pos: number, n: number): void {
  if (pos + n > buf.length) throw new DnsFormatError("message ends early");
}

function readRecord(buf: Buffer, pos: number): { record: ResourceRecord; next: number } {
  const { name, next: at } = readName(buf, pos);
  need(buf, at, 10);
  const type = buf.readUInt16BE(at);
  const cls = buf.readUInt16BE(at + 2);
  const ttl = buf.readUInt32BE(at + 4);
  const length = buf.readUInt16BE(at + 8);
  const start = at + 10;
  const end = start + length;
  need(buf, start, length);
  return { record: { name, type, class: cls, ttl, data: readRData(buf, type, start, end) }, next: end };
}

function readRData(buf: Buffer, type: number, start: number, end: number): RData {
  switch (type) {
    case TYPE.A:
      if (end - start !== 4) throw new DnsFormatError("A record data is not 4 bytes");
      return { kind: "A", address: [...buf.subarray(start, end)].join(".") };
    case TYPE.SRV: {
      if (end - start < 7) throw new DnsFormatError("SRV record data too short");
      const target = readName(buf, start + 6);
      if (target.next !== end) throw new DnsFormatError("SRV record length mismatch");
      return {
        kind: "SRV",
        priority: buf.readUInt16BE(start),
        weight: buf.readUInt16BE(start + 2),
        port: buf.readUInt16BE(start + 4),
        target: target.name,
      };
    }
    case TYPE.SOA: {
      const mname = readName(buf, start);
      const rname = readName(buf, mname.next);
      const p = rname.next;
      if (p + 20 !== end) throw new DnsFormatError("SOA record length mismatch");
      return {
        kind: "SOA",
        mname: mname.name,
        rname: rname.name,
        serial: buf.readUInt32BE(p),
        refresh: buf.readUInt32BE(p + 4),
        retry: buf.readUInt32BE(p + 8),
        expire: buf.readUInt32BE(p + 12),
        minimum: buf.readUInt32BE(p + 16),
      };
    }
    default:
      return { kind: "raw", bytes: Buffer.from(buf.subarray(start, end)) };
  }
}

/**
 * Reads a possibly compressed name. Pointers must point before themselves and the name may not
 * exceed 255 bytes, which together rule out pointer loops.
 */
function readName(buf: Buffer, offset: number): { name: string; next: number } {
  const labels: string[] = [];
  let pos = offset;
  let next = -1;
  let wire = 1;
  for (;;) {
    need(buf, pos, 1);
    const len = buf[pos] ?? 0;
    if ((len & 0xc0) === 0xc0) {
      need(buf, pos, 2);
      const target = ((len & 0x3f) << 8) | (buf[pos + 1] ?? 0);
      if (target >= pos) throw new DnsFormatError("compression pointer does not point backwards");
      if (next < 0) next = pos + 2;
      pos = target;
      continue;
    }
    if ((len & 0xc0) !== 0) throw new DnsFormatError("unsupported label type");
    if (len === 0) {
      return { name: labels.join("."), next: next < 0 ? pos + 1 : next };
    }
    need(buf, pos + 1, len);
    wire += len + 1;
    if (wire > MAX_NAME_WIRE) throw new DnsFormatError("name longer than 255 bytes");
    labels.push(escapeLabel(buf.subarray(pos + 1, pos + 1 + len)));
    pos += len + 1;
  }
}

function escapeLabel(bytes: Buffer): string {
  if (bytes.every((b) => b > 0x20 && b < 0x7f && b !== 0x2e && b !== 0x5c)) return bytes.toString("latin1");
  let out = "";
  for (const b of bytes) {
    if (b === 0x2e || b === 0x5c) out += `\\${String.fromCharCode(b)}`;
    else if (b > 0x20 && b < 0x7f) out += String.fromCharCode(b);
    else out += `\\${String(b).padStart(3, "0")}`;
  }
  return out;
}

// ---- encoding

/** Encodes a message, compressing owner names; throws if it exceeds 65535 bytes. */
export function encodeMessage(msg: DnsMessage): Buffer {
  const w = new Writer();
  w.u16(msg.id);
  w.u16(
    (msg.qr ? 0x8000 : 0) |
      ((msg.opcode & 0xf) << 11) |
      (msg.aa ? 0x0400 : 0) |
      (msg.tc ? 0x0200 : 0) |
      (msg.rd ? 0x0100 : 0) |
      (msg.ra ? 0x0080 : 0) |
      (msg.rcode & 0xf),
  );
  for (const n of [msg.questions.length, msg.answers.length, msg.authority.length, msg.additional.length]) {
    w.u16(n);
  }
  for (const q of msg.questions) {
    w.name(q.name, true);
    w.u16(q.type);
    w.u16(q.class);
  }
  for (const rr of [...msg.answers, ...msg.authority, ...msg.additional]) writeRecord(w, rr);
  return w.done();
}

function writeRecord(w: Writer, rr: ResourceRecord): void {
  w.name(rr.name, true);
  w.u16(rr.type);
  w.u16(rr.class);
  w.u32(rr.ttl);
  const lengthAt = w.length;
  w.u16(0);
  const d = rr.data;
  // Names inside RDATA are written uncompressed: RFC 2782 forbids compressing SRV targets.
  switch (d.kind) {
    case "A":
      w.ipv4(d.address);
      break;
    case "SRV":
      w.u16(d.priority);
      w.u16(d.weight);
      w.u16(d.port);
      w.name(d.target, false);
      break;
    case "SOA":
      w.name(d.mname, false);
      w.name(d.rname, false);
      for (const n of [d.serial, d.refresh, d.retry, d.expire, d.minimum]) w.u32(n);
      break;
    case "raw":
      w.bytes(d.bytes);
      break;
  }
  w.patch16(lengthAt, w.length - lengthAt - 2);
}

/** Splits a presentation-form name at its unescaped dots; labels stay escaped. */
function nameLabels(name: string): string[] {
  if (name === "") return [];
  if (!name.includes("\\")) return name.split(".");
  const labels: string[] = [];
  let current = "";
  for (let i = 0; i < name.length; i++) {
    const c = name[i];
    if (c === "\\") {
      current += name.slice(i, i + 2);
      i++;
    } else if (c === ".") {
      labels.push(current);
      current = "";
    } else current += c;
  }
  labels.push(current);
  return labels;
}

/** Labels that are their own wire bytes: no escapes, nothing beyond one byte per character. */
const PLAIN_LABEL = /^[^\\\u0100-\uffff]*$/;

function unescapeLabel(label: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < label.length; i++) {
    const c = label.charCodeAt(i);
    if (c !== 0x5c) {
      bytes.push(c);
      continue;
    }
    const digits = label.slice(i + 1, i + 4);
    if (/^\d{3}$/.test(digits)) {
      bytes.push(Number(digits));
      i += 3;
    } else {
      bytes.push(label.charCodeAt(i + 1));
      i += 1;
    }
  }
  if (bytes.some((b) => Number.isNaN(b) || b > 255)) throw new Error(`bad label: ${label}`);
  return Buffer.from(bytes);
}

class Writer {
  // Unsafe is fine: only bytes written are ever returned.
  private buf = Buffer.allocUnsafe(EDNS_UDP_MAX);
  length = 0;
  /** Offsets of names already written, by their exact presentation form, for compression. */
  private readonly names = new Map<string, number>();

  private room(n: number): void {
    if (this.length + n > MAX_MESSAGE) throw new Error("DNS message exceeds 65535 bytes");
    if (this.length + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.min(MAX_MESSAGE, Math.max(this.buf.length * 2, this.length + n)));
    this.buf.copy(bigger, 0, 0, this.length);
    this.buf = bigger;
  }
  u16(v: number): void {
    this.room(2);
    this.length = this.buf.writeUInt16BE(v, this.length);
  }
  u32(v: number): void {
    this.room(4);
    this.length = this.buf.writeUInt32BE(v >>> 0, this.length);
  }
  bytes(b: Buffer): void {
    this.room(b.length);
    this.length += b.copy(this.buf, this.length);
  }
  ipv4(address: string): void {
    const parts = address.split(".");
    if (parts.length !== 4) throw new Error(`not an IPv4 address: ${address}`);
    this.room(4);
    for (const part of parts) {
      const n = Number(part);
      if (!Number.isInteger(n) || n < 0 || n > 255) throw new Error(`not an IPv4 address: ${address}`);
      this.buf[this.length++] = n;
    }
  }
  patch16(at: number, v: number): void {
    this.buf.writeUInt16BE(v, at);
  }
  name(name: string, compress: boolean): void {
    let wire = 1;
    // Labels are verbatim slices of `name`, so each suffix starts where its label does.
    let start = 0;
    for (const label of nameLabels(name)) {
      if (compress) {
        const suffix = name.slice(start);
        const earlier = this.names.get(suffix);
        if (earlier !== undefined) {
          this.u16(0xc000 | earlier);
          return;
        }
        // Pointers have 14 bits, so only names in the first 16 KiB can be targets.
        if (this.length < 0x4000) this.names.set(suffix, this.length);
      }
      start += label.length + 1;
      const plain = PLAIN_LABEL.test(label);
      const length = plain ? label.length : unescapeLabel(label).length;
      if (length === 0 || length > MAX_LABEL) throw new Error(`bad label length in ${name}`);
      wire += length + 1;
      if (wire > MAX_NAME_WIRE) throw new Error(`name longer than 255 bytes: ${name}`);
      this.room(1 + length);
      this.buf[this.length++] = length;
      if (plain) this.length += this.buf.write(label, this.length, "latin1");
      else this.bytes(unescapeLabel(label));
    }
    this.room(1);
    this.buf[this.length++] = 0;
  }
  done(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

// ---- answering

/** What the DNS answers from: the watch-fed cache implements it. */
export interface ZoneData {
  /** Live instances of a service (name lowercased). */
  service(name: string): readonly ServiceRecord[];
  /** IPv4 addresses published by the machine(s) whose ID starts with this 8-character prefix. */
  node(machineID8: string): readonly string[];
}

export interface RespondOptions {
  transport: "udp" | "tcp";
  /** TTL of answers and of negative answers (SOA minimum). */
  ttl?: number;
  /** Rotates answers by this much, so successive queries spread clients over instances. */
  rotate?: number;
}

/** `<first 8 of machine ID>.node.flotilla`: the SRV target for a machine's instances. */
export function nodeName(machineID: string): string {
  return `${machineID.slice(0, 8).toLowerCase()}.node.${ZONE}`;
}

/**
 * The response to one query, or undefined when it must be dropped: fewer than 12 bytes (no ID to
 * answer to) or a response rather than a query (answering those could loop between servers).
 * Never throws on bad input; malformed queries get FORMERR.
 */
export function respond(query: Buffer, zone: ZoneData, opts: RespondOptions): Buffer | undefined {
  if (query.length < 12 || (query.readUInt16BE(2) & 0x8000) !== 0) return undefined;
  const reply = (rcode: number, rest: Partial<DnsMessage> = {}): DnsMessage => ({
    id: query.readUInt16BE(0),
    qr: true,
    opcode: (query.readUInt16BE(2) >> 11) & 0xf,
    aa: false,
    tc: false,
    rd: (query.readUInt16BE(2) & 0x0100) !== 0,
    ra: false,
    rcode,
    questions: [],
    answers: [],
    authority: [],
    additional: [],
    ...rest,
  });

  let msg: DnsMessage;
  try {
    msg = decodeMessage(query);
  } catch {
    return encodeMessage(reply(RCODE.FORMERR));
  }
  if (msg.opcode !== OPCODE_QUERY) return encodeMessage(reply(RCODE.NOTIMP, { questions: msg.questions }));
  const opts41 = msg.additional.filter((r) => r.type === TYPE.OPT);
  const q = msg.questions[0];
  if (msg.questions.length !== 1 || !q || opts41.length > 1) return encodeMessage(reply(RCODE.FORMERR));

  const clientOpt = opts41[0];
  const opt = (extendedRcode: number): ResourceRecord[] =>
    clientOpt
      ? [{ name: "", type: TYPE.OPT, class: EDNS_UDP_MAX, ttl: extendedRcode << 24, data: RAW_EMPTY }]
      : [];
  if (clientOpt && ((clientOpt.ttl >> 16) & 0xff) !== 0) {
    return encodeMessage(reply(0, { questions: [q], additional: opt(BADVERS_UPPER) }));
  }

  const answer = answerQuestion(q, zone, opts.ttl ?? DEFAULT_TTL, opts.rotate ?? 0);
  const full = reply(answer.rcode, {
    questions: [q],
    aa: answer.authoritative,
    answers: answer.answers,
    authority: answer.authority,
    additional: [...answer.additional, ...opt(0)],
  });
  const limit =
    opts.transport === "tcp"
      ? MAX_MESSAGE
      : clientOpt
        ? Math.min(Math.max(clientOpt.class, UDP_MIN), EDNS_UDP_MAX)
        : UDP_MIN;
  try {
    const wire = encodeMessage(full);
    if (wire.length <= limit) return wire;
  } catch {
    // Over 64 KiB: fall through to a truncated answer.
  }
  // Truncated: no records at all, so the client retries over TCP instead of using a partial set.
  return encodeMessage({ ...full, tc: true, answers: [], authority: [], additional: opt(0) });
}

const RAW_EMPTY: RData = { kind: "raw", bytes: Buffer.alloc(0) };

interface Answer {
  rcode: number;
  authoritative: boolean;
  answers: ResourceRecord[];
  authority: ResourceRecord[];
  additional: ResourceRecord[];
}

function answerQuestion(q: Question, zone: ZoneData, ttl: number, rotate: number): Answer {
  const labels = nameLabels(q.name.toLowerCase());
  if (labels[labels.length - 1] !== ZONE) return refused();
  if (q.class !== CLASS_IN || q.type === TYPE.AXFR || q.type === TYPE.IXFR) return refused();

  const soa: ResourceRecord = {
    name: ZONE,
    type: TYPE.SOA,
    class: CLASS_IN,
    ttl,
    data: {
      kind: "SOA",
      mname: `ns.${ZONE}`,
      rname: `hostmaster.${ZONE}`,
      serial: 1,
      refresh: 60,
      retry: 10,
      expire: 3600,
      minimum: ttl,
    },
  };
  const negative = (rcode: number): Answer => ({
    rcode,
    authoritative: true,
    answers: [],
    authority: [soa],
    additional: [],
  });
  const positive = (answers: ResourceRecord[], additional: ResourceRecord[] = []): Answer =>
    answers.length === 0
      ? negative(RCODE.NOERROR)
      : { rcode: RCODE.NOERROR, authoritative: true, answers, authority: [], additional };
  const aRecords = (name: string, ips: Iterable<string>): ResourceRecord[] =>
    [...new Set(ips)]
      .sort()
      .map((address) => ({ name, type: TYPE.A, class: CLASS_IN, ttl, data: { kind: "A", address } }));
  const wantsA = q.type === TYPE.A || q.type === TYPE.ANY;
  const wantsSrv = q.type === TYPE.SRV;

  const [first = "", second = "", third = ""] = labels;
  switch (labels.length) {
    case 1:
      return q.type === TYPE.SOA ? positive([{ ...soa, name: q.name }]) : negative(RCODE.NOERROR);
    case 2:
      // `service.flotilla` and `node.flotilla` exist as parents of real names, holding no records.
      return first === "service" || first === "node" ? negative(RCODE.NOERROR) : negative(RCODE.NXDOMAIN);
    case 3: {
      if (second === "node") {
        const ips = zone.node(first);
        if (ips.length === 0) return negative(RCODE.NXDOMAIN);
        return positive(wantsA ? rotated(aRecords(q.name, ips), rotate) : []);
      }
      if (second !== "service") return negative(RCODE.NXDOMAIN);
      if (first === "_tcp" || first === "_udp") return negative(RCODE.NOERROR);
      const instances = zone.service(first);
      if (instances.length === 0) return negative(RCODE.NXDOMAIN);
      if (wantsA) {
        const ips = instances.map((r) => r.ip);
        return positive(rotated(aRecords(q.name, ips), rotate));
      }
      return wantsSrv ? srvAnswer(q.name, instances, undefined) : negative(RCODE.NOERROR);
    }
    case 4: {
      const protocol = second === "_tcp" ? "tcp" : second === "_udp" ? "udp" : undefined;
      if (third !== "service" || !protocol || !first.startsWith("_")) return negative(RCODE.NXDOMAIN);
      const instances = zone.service(first.slice(1));
      if (instances.length === 0) return negative(RCODE.NXDOMAIN);
      return wantsSrv ? srvAnswer(q.name, instances, protocol) : negative(RCODE.NOERROR);
    }
    default:
      return negative(RCODE.NXDOMAIN);
  }

  function srvAnswer(
    name: string,
    instances: readonly ServiceRecord[],
    protocol: string | undefined,
  ): Answer {
    const answers: ResourceRecord[] = [];
    const targets = new Map<string, string[]>();
    for (const r of sortedInstances(instances)) {
      const target = nodeName(r.machineID);
      for (const p of r.ports) {
        if (protocol && p.protocol !== protocol) continue;
        answers.push({
          name,
          type: TYPE.SRV,
          class: CLASS_IN,
          ttl,
          data: { kind: "SRV", priority: 1, weight: 1, port: p.host, target },
        });
        const ips = targets.get(target);
        if (ips) ips.push(r.ip);
        else targets.set(target, [r.ip]);
      }
    }
    const additional = [...targets].flatMap(([target, ips]) => aRecords(target, ips));
    return positive(rotated(answers, rotate), additional);
  }
}

function refused(): Answer {
  return { rcode: RCODE.REFUSED, authoritative: false, answers: [], authority: [], additional: [] };
}

function sortedInstances(instances: readonly ServiceRecord[]): ServiceRecord[] {
  return [...instances].sort((a, b) =>
    a.machineID === b.machineID ? (a.unit < b.unit ? -1 : 1) : a.machineID < b.machineID ? -1 : 1,
  );
}

function rotated<T>(items: T[], by: number): T[] {
  if (items.length < 2) return items;
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}
