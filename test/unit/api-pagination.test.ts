import { describe, expect, it } from "vitest";
import { ApiError } from "../../agent/api/errors.js";
import { encodePageToken, pageTokenFromQuery, paginate } from "../../agent/api/pagination.js";

function tokenError(values: string[], limit = 100): string {
  try {
    pageTokenFromQuery(values, limit);
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(400);
    return (err as ApiError).message;
  }
  throw new Error("expected the token to be refused");
}

describe("page tokens", () => {
  it("encode {Limit, Page} as little-endian uint16s in padded base64url, like Go", () => {
    // bytes 64 00 02 00
    expect(encodePageToken({ limit: 100, page: 2 })).toBe("ZAACAA==");
    expect(encodePageToken({ limit: 0xfbff, page: 0xffff })).toBe("__v__w==");
  });

  it("decode what they encode", () => {
    for (const page of [1, 2, 255, 256, 65535]) {
      expect(pageTokenFromQuery([encodePageToken({ limit: 100, page })], 100)).toEqual({ limit: 100, page });
    }
  });

  it("default to page 1 with the server's limit", () => {
    expect(pageTokenFromQuery([], 100)).toEqual({ limit: 100, page: 1 });
  });

  it("refuse fleet's functional-test token EwBMLg== (limit 19)", () => {
    expect(tokenError(["EwBMLg=="])).toBe("token limit must be 100");
  });

  it("refuse a token made for another page size, page 0, several values and bad encodings", () => {
    expect(tokenError([encodePageToken({ limit: 100, page: 1 })], 50)).toBe("token limit must be 50");
    expect(tokenError([encodePageToken({ limit: 100, page: 0 })])).toBe(
      "token page must be greater than zero",
    );
    expect(tokenError(["ZAABAA==", "ZAACAA=="])).toBe("too many values for page token");
    expect(tokenError(["ZAABAA"])).toMatch(/not padded base64url/);
    expect(tokenError(["ZA+BAA=="])).toMatch(/not padded base64url/);
    expect(tokenError(["ZAA="])).toMatch(/too short/);
    expect(tokenError([""])).toMatch(/too short/);
  });
});

describe("paginate", () => {
  const items = Array.from({ length: 250 }, (_, i) => i);

  it("walks every item once, following next tokens", () => {
    const seen: number[] = [];
    let token = pageTokenFromQuery([], 100);
    for (;;) {
      const page = paginate(items, token);
      seen.push(...page.items);
      if (!page.next) break;
      token = pageTokenFromQuery([page.next], 100);
    }
    expect(seen).toEqual(items);
  });

  it("keeps fleet's quirk: an exact multiple still gets a next token, whose page is empty", () => {
    const hundred = items.slice(0, 100);
    const first = paginate(hundred, { limit: 100, page: 1 });
    expect(first.items).toHaveLength(100);
    expect(first.next).toBe(encodePageToken({ limit: 100, page: 2 }));
    expect(paginate(hundred, { limit: 100, page: 2 })).toEqual({ items: [] });
  });

  it("gives no token for a short last page or an empty list", () => {
    expect(paginate(items, { limit: 100, page: 3 })).toEqual({ items: items.slice(200) });
    expect(paginate([], { limit: 100, page: 1 })).toEqual({ items: [] });
  });

  it("never names a page past 65535", () => {
    expect(paginate([1, 2], { limit: 1, page: 0xffff })).toEqual({ items: [] });
    const many = Array.from({ length: 0xffff + 1 }, () => 0);
    expect(paginate(many, { limit: 1, page: 0xffff }).next).toBeUndefined();
  });
});
