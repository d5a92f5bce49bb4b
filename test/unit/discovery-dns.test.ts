import { describe, expect, it } from "vitest";
import {
  CLASS_IN,
  DnsFormatError,
  type DnsMessage,
  decodeMessage,
  encodeMessage,
  RCODE,
  type ResourceRecord,
  type RespondOptions,
  respond,
  TYPE,
  type ZoneData,
} from "../../agent/discovery/dns.js";
import type { ServiceRecord } from "../../agent/discovery/record.js";

const M1 = "aaaaaaaa00000000000000000000000a";
const M2 = "bbbbbbbb00000000000000000000000b";

function instance(machineID: string, unit: string, ip: string, ports: ServiceRecord["ports"]): ServiceRecord {
  return { service: "web", machineID, unit, ip, ports };
}

const WEB = [
  instance(M1, "web@1.service", "10.0.0.1", [
    { host: 8080, container: 80, protocol: "tcp" },
    { host: 5353, container: 53, protocol: "udp" },
  ]),
  instance(M1, "web@3.service", "10.0.0.1", [{ host: 8081, container: 80, protocol: "tcp" }]),
  instance(M2, "web@2.service", "10.0.0.2", [{ host: 8080, container: 80, protocol: "tcp" }]),
];

function zoneOf(records: ServiceRecord[]): ZoneData {
  return {
    service: (name) => records.filter((r) => r.service === name),
    node: (id8) => [...new Set(records.filter((r) => r.machineID.startsWith(id8)).map((r) => r.ip))],
  };
}
const zone = zoneOf(WEB);

interface QueryOptions {
  id?: number;
  class?: number;
  opcode?: number;
  /** EDNS0 UDP payload size; no OPT record when undefined. */
  edns?: number;
  ednsVersion?: number;
}

function query(name: string, type: number, o: QueryOptions = {}): Buffer {
  const additional: ResourceRecord[] =
    o.edns === undefined
      ? []
      : [
          {
            name: "",
            type: TYPE.OPT,
            class: o.edns,
            ttl: (o.ednsVersion ?? 0) << 16,
            data: { kind: "raw", bytes: Buffer.alloc(0) },
          },
        ];
  return encodeMessage({
    id: o.id ?? 0x1234,
    qr: false,
    opcode: o.opcode ?? 0,
    aa: false,
    tc: false,
    rd: true,
    ra: false,
    rcode: 0,
    questions: [{ name, type, class: o.class ?? CLASS_IN }],
    answers: [],
    authority: [],
    additional,
  });
}

function ask(name: string, type: number, o: QueryOptions = {}, opts: Partial<RespondOptions> = {}, z = zone) {
  const wire = respond(query(name, type, o), z, { transport: "udp", ...opts });
  if (!wire) throw new Error("dropped");
  return { wire, msg: decodeMessage(wire) };
}

const data = (rrs: ResourceRecord[]) => rrs.map((r) => ({ name: r.name, ttl: r.ttl, ...r.data }));

describe("DNS codec", () => {
  it("round-trips messages with A, SRV, SOA, OPT and unknown records", () => {
    const msg: DnsMessage = {
      id: 65535,
      qr: true,
      opcode: 0,
      aa: true,
      tc: false,
      rd: true,
      ra: false,
      rcode: RCODE.NXDOMAIN,
      questions: [{ name: "Web.Service.flotilla", type: TYPE.SRV, class: CLASS_IN }],
      answers: [
        {
          name: "Web.Service.flotilla",
          type: TYPE.A,
          class: CLASS_IN,
          ttl: 5,
          data: { kind: "A", address: "192.168.1.254" },
        },
        {
          name: "Web.Service.flotilla",
          type: TYPE.SRV,
          class: CLASS_IN,
          ttl: 5,
          data: { kind: "SRV", priority: 1, weight: 2, port: 65535, target: "aaaaaaaa.node.flotilla" },
        },
        {
          name: "x.flotilla",
          type: 16,
          class: CLASS_IN,
          ttl: 0xffffffff,
          data: { kind: "raw", bytes: Buffer.from("\x05hello") },
        },
      ],
      authority: [
        {
          name: "flotilla",
          type: TYPE.SOA,
          class: CLASS_IN,
          ttl: 5,
          data: {
            kind: "SOA",
            mname: "ns.flotilla",
            rname: "hostmaster.flotilla",
            serial: 4294967295,
            refresh: 60,
            retry: 10,
            expire: 3600,
            minimum: 5,
          },
        },
      ],
      additional: [
        { name: "", type: TYPE.OPT, class: 1232, ttl: 0, data: { kind: "raw", bytes: Buffer.alloc(0) } },
      ],
    };
    expect(decodeMessage(encodeMessage(msg))).toEqual(msg);
  });

  it("keeps odd label bytes through a round-trip in escaped form", () => {
    const name = "a\\.b.sp\\032ce.nul\\000.back\\\\slash.flotilla";
    const wire = query(name, TYPE.A);
    expect(decodeMessage(wire).questions[0]?.name).toBe(name);
    // "a.b" is one 3-byte label on the wire.
    expect(wire.subarray(12, 16)).toEqual(Buffer.from([3, 0x61, 0x2e, 0x62]));
  });

  it("compresses owner names on encode and follows pointers on decode", () => {
    const { wire, msg } = ask("web.service.flotilla", TYPE.A);
    // Both answers point back at the question name (offset 12).
    expect(wire.filter((_, i) => wire[i] === 0xc0 && wire[i + 1] === 12).length).toBe(2);
    expect(msg.answers.map((a) => a.name)).toEqual(["web.service.flotilla", "web.service.flotilla"]);
  });

  it("decodes a compressed SRV target written by another server", () => {
    // Header, question "a.flotilla" SRV, one answer: owner = pointer to 12, target = "n." + pointer to 14.
    const head = Buffer.from([0, 1, 0x84, 0, 0, 1, 0, 1, 0, 0, 0, 0]);
    const question = Buffer.from([1, 0x61, 8, ...Buffer.from("flotilla"), 0, 0, 33, 0, 1]);
    const rdata = Buffer.from([0, 1, 0, 1, 0x1f, 0x90, 1, 0x6e, 0xc0, 14]);
    const answer = Buffer.concat([Buffer.from([0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 5, 0, rdata.length]), rdata]);
    const msg = decodeMessage(Buffer.concat([head, question, answer]));
    expect(msg.answers[0]?.name).toBe("a.flotilla");
    expect(msg.answers[0]?.data).toEqual({
      kind: "SRV",
      priority: 1,
      weight: 1,
      port: 8080,
      target: "n.flotilla",
    });
  });

  it("rejects malformed messages with DnsFormatError", () => {
    const head = (qd: number, an = 0) => Buffer.from([0, 1, 0, 0, 0, qd, 0, an, 0, 0, 0, 0]);
    const bad: [string, Buffer][] = [
      ["short header", Buffer.from([0, 1, 0])],
      ["question cut short", Buffer.concat([head(1), Buffer.from([3, 0x61, 0x62])])],
      ["pointer to itself", Buffer.concat([head(1), Buffer.from([0xc0, 12, 0, 1, 0, 1])])],
      ["pointer forward", Buffer.concat([head(1), Buffer.from([0xc0, 20, 0, 1, 0, 1, 0, 0])])],
      ["label type 01", Buffer.concat([head(1), Buffer.from([0x41, 0, 0, 1, 0, 1])])],
      ["name over 255 bytes", Buffer.concat([head(1), Buffer.alloc(260, 1), Buffer.from([0, 0, 1, 0, 1])])],
      ["trailing bytes", Buffer.concat([query("a.flotilla", TYPE.A), Buffer.from([0])])],
      [
        "A record of 3 bytes",
        Buffer.concat([head(0, 1), Buffer.from([0, 0, 1, 0, 1, 0, 0, 0, 5, 0, 3, 1, 2, 3])]),
      ],
      [
        "record data past the end",
        Buffer.concat([head(0, 1), Buffer.from([0, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 1])]),
      ],
    ];
    for (const [what, buf] of bad) expect(() => decodeMessage(buf), what).toThrow(DnsFormatError);
  });
});

describe("DNS answers for the flotilla zone", () => {
  it("A: one record per distinct instance IP, authoritative, short TTL", () => {
    const { msg } = ask("web.service.flotilla", TYPE.A, { id: 777 });
    expect(msg).toMatchObject({ id: 777, qr: true, aa: true, rd: true, ra: false, tc: false, rcode: 0 });
    expect(msg.questions).toEqual([{ name: "web.service.flotilla", type: TYPE.A, class: CLASS_IN }]);
    expect(data(msg.answers)).toEqual([
      { name: "web.service.flotilla", ttl: 5, kind: "A", address: "10.0.0.1" },
      { name: "web.service.flotilla", ttl: 5, kind: "A", address: "10.0.0.2" },
    ]);
    expect(ask("web.service.flotilla", TYPE.A, {}, { ttl: 30 }).msg.answers[0]?.ttl).toBe(30);
  });

  it("SRV on NAME.service.flotilla: every port, targets' addresses in the additional section", () => {
    const { msg } = ask("web.service.flotilla", TYPE.SRV);
    expect(data(msg.answers)).toEqual([
      {
        name: "web.service.flotilla",
        ttl: 5,
        kind: "SRV",
        priority: 1,
        weight: 1,
        port: 8080,
        target: "aaaaaaaa.node.flotilla",
      },
      {
        name: "web.service.flotilla",
        ttl: 5,
        kind: "SRV",
        priority: 1,
        weight: 1,
        port: 5353,
        target: "aaaaaaaa.node.flotilla",
      },
      {
        name: "web.service.flotilla",
        ttl: 5,
        kind: "SRV",
        priority: 1,
        weight: 1,
        port: 8081,
        target: "aaaaaaaa.node.flotilla",
      },
      {
        name: "web.service.flotilla",
        ttl: 5,
        kind: "SRV",
        priority: 1,
        weight: 1,
        port: 8080,
        target: "bbbbbbbb.node.flotilla",
      },
    ]);
    expect(data(msg.additional)).toEqual([
      { name: "aaaaaaaa.node.flotilla", ttl: 5, kind: "A", address: "10.0.0.1" },
      { name: "bbbbbbbb.node.flotilla", ttl: 5, kind: "A", address: "10.0.0.2" },
    ]);
  });

  it("SRV on _NAME._PROTO.service.flotilla (RFC 2782): only that protocol's ports", () => {
    const udp = ask("_web._udp.service.flotilla", TYPE.SRV).msg;
    expect(udp.answers.map((a) => a.data)).toEqual([
      { kind: "SRV", priority: 1, weight: 1, port: 5353, target: "aaaaaaaa.node.flotilla" },
    ]);
    expect(udp.additional.map((a) => a.name)).toEqual(["aaaaaaaa.node.flotilla"]);
    expect(ask("_web._tcp.service.flotilla", TYPE.SRV).msg.answers).toHaveLength(3);
    expect(ask("_web._sctp.service.flotilla", TYPE.SRV).msg.rcode).toBe(RCODE.NXDOMAIN);
    expect(ask("web._tcp.service.flotilla", TYPE.SRV).msg.rcode).toBe(RCODE.NXDOMAIN);
    expect(ask("_nope._tcp.service.flotilla", TYPE.SRV).msg.rcode).toBe(RCODE.NXDOMAIN);
  });

  it("A on a node name gives that machine's address", () => {
    expect(ask("bbbbbbbb.node.flotilla", TYPE.A).msg.answers.map((a) => a.data)).toEqual([
      { kind: "A", address: "10.0.0.2" },
    ]);
    expect(ask("cccccccc.node.flotilla", TYPE.A).msg.rcode).toBe(RCODE.NXDOMAIN);
  });

  it("NXDOMAIN with the zone's SOA for names that do not exist", () => {
    for (const name of ["nope.service.flotilla", "x.y.flotilla", "a.web.service.flotilla", "web.flotilla"]) {
      const { msg } = ask(name, TYPE.A);
      expect(msg.rcode, name).toBe(RCODE.NXDOMAIN);
      expect(msg.aa).toBe(true);
      expect(msg.answers).toEqual([]);
      expect(msg.authority).toHaveLength(1);
      expect(msg.authority[0]).toMatchObject({
        name: "flotilla",
        type: TYPE.SOA,
        ttl: 5,
        data: { minimum: 5 },
      });
    }
  });

  it("NOERROR without answers (NODATA) for existing names and other types", () => {
    const cases: [string, number][] = [
      ["web.service.flotilla", TYPE.AAAA],
      ["web.service.flotilla", 16],
      ["_web._tcp.service.flotilla", TYPE.A],
      ["service.flotilla", TYPE.A],
      ["node.flotilla", TYPE.A],
      ["_tcp.service.flotilla", TYPE.SRV],
      ["aaaaaaaa.node.flotilla", TYPE.SRV],
      ["flotilla", TYPE.NS],
    ];
    for (const [name, type] of cases) {
      const { msg } = ask(name, type);
      expect(msg.rcode, name).toBe(RCODE.NOERROR);
      expect(msg.answers, name).toEqual([]);
      expect(msg.authority[0]?.type, name).toBe(TYPE.SOA);
    }
  });

  it("SOA at the apex; ANY answers like A", () => {
    expect(ask("flotilla", TYPE.SOA).msg.answers[0]?.data).toMatchObject({
      kind: "SOA",
      mname: "ns.flotilla",
    });
    expect(ask("web.service.flotilla", TYPE.ANY).msg.answers.map((a) => a.type)).toEqual([TYPE.A, TYPE.A]);
  });

  it("REFUSED for names outside the zone, other classes and zone transfers", () => {
    const cases: [string, number, QueryOptions][] = [
      ["example.com", TYPE.A, {}],
      ["flotilla.com", TYPE.A, {}],
      ["notflotilla", TYPE.A, {}],
      ["", TYPE.NS, {}],
      ["web.service.flotilla", TYPE.A, { class: 3 }],
      ["flotilla", TYPE.AXFR, {}],
      ["flotilla", TYPE.IXFR, {}],
    ];
    for (const [name, type, o] of cases) {
      const { msg } = ask(name, type, o);
      expect(msg.rcode, name).toBe(RCODE.REFUSED);
      expect(msg.aa, name).toBe(false);
      expect(msg.answers).toEqual([]);
    }
  });

  it("echoes the question's case (0x20) and matches names case-insensitively", () => {
    const { msg } = ask("WeB.SeRvIcE.FlOtIlLa", TYPE.A);
    expect(msg.questions[0]?.name).toBe("WeB.SeRvIcE.FlOtIlLa");
    expect(msg.answers.map((a) => a.name)).toEqual(["WeB.SeRvIcE.FlOtIlLa", "WeB.SeRvIcE.FlOtIlLa"]);
  });

  it("rotates answers by the given amount", () => {
    const first = (rotate: number) =>
      ask("web.service.flotilla", TYPE.A, {}, { rotate }).msg.answers[0]?.data;
    expect(first(0)).toEqual({ kind: "A", address: "10.0.0.1" });
    expect(first(1)).toEqual({ kind: "A", address: "10.0.0.2" });
    expect(first(2)).toEqual({ kind: "A", address: "10.0.0.1" });
  });
});

describe("DNS protocol edges", () => {
  const many = (n: number) =>
    zoneOf(
      Array.from({ length: n }, (_, i) =>
        instance(`m${String(i).padStart(7, "0")}x`, `web@${i}.service`, `10.1.${i >> 8}.${i & 255}`, [
          { host: 8080, protocol: "tcp" },
        ]),
      ),
    );

  it("sets TC and sends no records when a UDP answer exceeds 512 bytes without EDNS0", () => {
    const { wire, msg } = ask("web.service.flotilla", TYPE.A, {}, {}, many(40));
    expect(wire.length).toBeLessThanOrEqual(512);
    expect(msg).toMatchObject({ tc: true, rcode: 0, answers: [], additional: [] });
    expect(msg.questions[0]?.name).toBe("web.service.flotilla");
  });

  it("uses the EDNS0 payload size, capped at 1232, and answers in full over TCP", () => {
    const edns = ask("web.service.flotilla", TYPE.A, { edns: 4096 }, {}, many(40));
    expect(edns.msg.tc).toBe(false);
    expect(edns.msg.answers).toHaveLength(40);
    expect(edns.msg.additional).toEqual([
      { name: "", type: TYPE.OPT, class: 1232, ttl: 0, data: { kind: "raw", bytes: Buffer.alloc(0) } },
    ]);
    const big = ask("web.service.flotilla", TYPE.A, { edns: 4096 }, {}, many(100));
    expect(big.wire.length).toBeLessThanOrEqual(1232);
    expect(big.msg.tc).toBe(true);
    expect(big.msg.additional.map((r) => r.type)).toEqual([TYPE.OPT]);
    // A client advertising less than 512 still gets 512.
    expect(ask("web.service.flotilla", TYPE.A, { edns: 100 }, {}, many(25)).msg.tc).toBe(false);
    expect(
      ask("web.service.flotilla", TYPE.A, {}, { transport: "tcp" }, many(1000)).msg.answers,
    ).toHaveLength(1000);
  });

  it("answers an unknown EDNS version with BADVERS", () => {
    const { msg } = ask("web.service.flotilla", TYPE.A, { edns: 1232, ednsVersion: 1 });
    expect(msg.rcode).toBe(0);
    expect(msg.answers).toEqual([]);
    // Extended rcode: upper 8 bits in the OPT TTL, so 1 << 4 | 0 = 16 (BADVERS).
    expect((msg.additional[0]?.ttl ?? 0) >>> 24).toBe(1);
  });

  it("NOTIMP for opcodes other than QUERY", () => {
    const { msg } = ask("web.service.flotilla", TYPE.A, { opcode: 2 });
    expect(msg).toMatchObject({ rcode: RCODE.NOTIMP, opcode: 2, answers: [] });
  });

  it("FORMERR for malformed queries, echoing the ID", () => {
    const valid = query("web.service.flotilla", TYPE.A, { id: 0xbeef });
    const twoQuestions = Buffer.from(valid);
    twoQuestions.writeUInt16BE(2, 4);
    const noQuestion = Buffer.from(valid.subarray(0, 12));
    noQuestion.writeUInt16BE(0, 4);
    const twoOpts = Buffer.from(query("web.service.flotilla", TYPE.A, { id: 0xbeef, edns: 1232 }));
    const opt = twoOpts.subarray(twoOpts.length - 11);
    const withTwoOpts = Buffer.concat([twoOpts, opt]);
    withTwoOpts.writeUInt16BE(2, 10);
    const cases = [
      twoQuestions,
      noQuestion,
      withTwoOpts,
      valid.subarray(0, 20),
      Buffer.concat([valid.subarray(0, 12), Buffer.from("garbage!")]),
    ];
    for (const q of cases) {
      const wire = respond(q, zone, { transport: "udp" });
      expect(wire).toBeDefined();
      const msg = decodeMessage(wire as Buffer);
      expect(msg).toMatchObject({ id: 0xbeef, qr: true, rcode: RCODE.FORMERR, answers: [] });
    }
  });

  it("drops what cannot be answered: under 12 bytes, or a response", () => {
    expect(respond(Buffer.alloc(0), zone, { transport: "udp" })).toBeUndefined();
    expect(respond(Buffer.alloc(11), zone, { transport: "udp" })).toBeUndefined();
    const response = Buffer.from(query("web.service.flotilla", TYPE.A));
    response[2] = (response[2] ?? 0) | 0x80;
    expect(respond(response, zone, { transport: "udp" })).toBeUndefined();
  });

  it("never throws on random or mutated input", () => {
    let seed = 42;
    const random = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    const base = query("_web._tcp.service.flotilla", TYPE.SRV, { edns: 1232 });
    for (let i = 0; i < 5000; i++) {
      let q: Buffer;
      if (i % 2 === 0) {
        q = Buffer.from(Array.from({ length: random() % 80 }, () => random() & 0xff));
      } else {
        q = Buffer.from(base.subarray(0, random() % (base.length + 1)));
        for (let j = 0; j < 3; j++) if (q.length > 0) q[random() % q.length] = random() & 0xff;
      }
      const transport = i % 3 === 0 ? "tcp" : "udp";
      const wire = respond(q, zone, { transport });
      if (wire) {
        const msg = decodeMessage(wire);
        expect(msg.qr).toBe(true);
        expect(msg.id).toBe(q.readUInt16BE(0));
        if (transport === "udp") expect(wire.length).toBeLessThanOrEqual(1232);
      }
    }
  });
});
