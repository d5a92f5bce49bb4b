import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  applyKernelArguments,
  KERNEL_ARGUMENTS_RECORD,
  parseKernelArgumentsRecord,
  readKernelArguments,
} from "../../agent/update/kargs.js";

describe("provisioned kernel arguments for the updater's slot entries", () => {
  it("applies the record to a release's command line, idempotently", () => {
    const args = parseKernelArgumentsRecord('{"shouldExist":["flotilla.test=1"],"shouldNotExist":["quiet"]}');
    const line = applyKernelArguments("root=PARTLABEL=ROOT rw quiet mount.usr=PARTLABEL=USR-B", args);
    expect(line).toBe("root=PARTLABEL=ROOT rw mount.usr=PARTLABEL=USR-B flotilla.test=1");
    expect(applyKernelArguments(line, args)).toBe(line);
  });

  it.each([
    ["not JSON", "{", /is not JSON/],
    ["a list", "[]", /is not an object/],
    ["a string instead of a list", '{"shouldExist":"a=1"}', /shouldExist: want a list/],
    [
      "an argument with a space",
      '{"shouldExist":["a=1 b=2"]}',
      /shouldExist: "a=1 b=2" is not one kernel argument/,
    ],
    ["a number", '{"shouldNotExist":[5]}', /shouldNotExist: 5 is not one kernel argument/],
  ])("refuses a record that is %s", (_what, text, message) => {
    expect(() => parseKernelArgumentsRecord(text)).toThrow(message);
  });

  it("reads none when nothing was provisioned, and names the file when the record is bad", async () => {
    const root = await mkdtemp(join(tmpdir(), "kargs-"));
    expect(await readKernelArguments(root)).toEqual({ shouldExist: [], shouldNotExist: [] });
    const file = join(root, KERNEL_ARGUMENTS_RECORD);
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, '{"shouldExist":["console=ttyS1"]}\n');
    expect(await readKernelArguments(root)).toEqual({ shouldExist: ["console=ttyS1"], shouldNotExist: [] });
    await writeFile(file, "null");
    await expect(readKernelArguments(root)).rejects.toThrow(`${file} is not an object`);
  });
});
