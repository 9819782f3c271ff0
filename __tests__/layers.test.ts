import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * The layers of lib/ (see .dependency-cruiser.cjs and the README's "Where things are"). `npm test` runs the
 * rules on the tree itself (`npm run lint:layers`); this suite proves each rule fires: it copies lib/ aside, adds
 * one deliberate violation per rule, and checks that dependency-cruiser refuses each one by the rule's name — the
 * message a contributor sees.
 */

const root = path.resolve(__dirname, '..');
const config = path.join(root, '.dependency-cruiser.cjs');
const depcruise = path.join(root, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');

/** A deliberate violation: a line added to a file of the copy, and the rule that must refuse it. */
interface Violation {
  rule: string;
  file: string;
  line: string;
}

const VIOLATIONS: Violation[] = [
  // the issue's own example: the core reaching into an API folder
  { rule: 'core-never-imports-relay-or-a-surface', file: 'lib/core/metering.ts', line: "import '../surfaces/chat/chat-completions';" },
  // a type-only import that closes a loop (request-body already imports json-walk)
  { rule: 'no-circular', file: 'lib/base/json-walk.ts', line: "import type { readJsonBody } from './request-body';" },
  { rule: 'no-surface-imports-another', file: 'lib/surfaces/completions/completions.ts', line: "import '../chat/chat-completions';" },
  { rule: 'shared-surface-code-is-not-an-api', file: 'lib/surfaces/shared/choices-json.ts', line: "import '../responses/responses';" },
  { rule: 'only-the-middleware-wires-the-surfaces', file: 'lib/relay/continuation.ts', line: "import { SURFACES } from '../surfaces';" },
  { rule: 'relay-never-imports-a-surface', file: 'lib/relay/provider-error.ts', line: "import '../surfaces/embeddings/embeddings';" },
  { rule: 'nothing-imports-the-entry', file: 'lib/relay/json-relay.ts', line: "import type { GatewayRequest } from '../middleware';" },
  { rule: 'options-are-types-only', file: 'lib/options/options.ts', line: "import { closest } from '../base/did-you-mean';" },
  { rule: 'options-import-nothing-above-them', file: 'lib/options/resolved.ts', line: "import type { Ticket } from '../core/admission';" },
  { rule: 'services-never-import-options-core-or-relay', file: 'lib/services/upstream/decode.ts', line: "import type { ResolvedOptions } from '../../options/resolved';" },
  { rule: 'no-service-imports-another', file: 'lib/services/redis/keys.ts', line: "import '../upstream/decode';" },
  { rule: 'ledgers-never-import-services-options-core-or-relay', file: 'lib/ledgers/metrics/observer.ts', line: "import type { UsageDialect } from '../../core/usage';" },
  { rule: 'contract-is-types-only-at-the-bottom', file: 'lib/contract/hooks.ts', line: "import type { LimitStore } from '../ledgers/stores/limit-store';" },
  { rule: 'contract-imports-types-only', file: 'lib/contract/hooks.ts', line: "import { toInferyError } from '../base/errors';" },
  { rule: 'base-imports-only-base', file: 'lib/base/auth.ts', line: "import type { Logger } from '../contract/hooks';" },
  { rule: 'client-stands-alone', file: 'lib/client/stream-reader.ts', line: "import { Buffer } from 'node:buffer';" },
  { rule: 'only-the-entry-and-client-index-import-the-client', file: 'lib/core/usage.ts', line: "import type { ToolCall } from '../client/stream-reader';" },
  { rule: 'express-is-types-only', file: 'lib/relay/unbuffered-head.ts', line: "import express from 'express';" },
  { rule: 'no-dev-dependency-in-lib', file: 'lib/base/did-you-mean.ts', line: "import 'supertest';" },
  { rule: 'no-unresolvable-import', file: 'lib/base/content-encoding.ts', line: "import './no-such-module';" },
];

/** A copy of the project's lib/ (and what resolving its imports needs) in a temporary directory. */
function copyOfLib(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'infery-layers-'));
  fs.cpSync(path.join(root, 'lib'), path.join(dir, 'lib'), { recursive: true });
  fs.copyFileSync(path.join(root, 'tsconfig.json'), path.join(dir, 'tsconfig.json'));
  fs.copyFileSync(path.join(root, 'package.json'), path.join(dir, 'package.json'));
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  return dir;
}

/** Runs the rules as `npm run lint:layers` does, in `dir`; returns the exit status and the `error <rule>: <from> → …` lines. */
function cruise(dir: string): { status: number | null; errors: Array<{ rule: string; from: string }>; output: string } {
  const run = spawnSync(process.execPath, [depcruise, 'lib', '--config', config, '--output-type', 'err-long'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  const output = `${run.stdout}${run.stderr}`;
  const errors = [...output.matchAll(/^\s*error ([a-z-]+): (\S+)/gm)].map((m) => ({ rule: m[1]!, from: m[2]! }));
  return { status: run.status, errors, output };
}

let clean: string;
let broken: string;
beforeAll(() => {
  clean = copyOfLib();
  broken = copyOfLib();
  for (const v of VIOLATIONS) fs.appendFileSync(path.join(broken, v.file), `\n${v.line}\n`);
});
afterAll(() => {
  for (const dir of [clean, broken]) if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('lib/ as it is breaks no layer rule: no import loop, no import running back up the order', () => {
  const result = cruise(clean);
  expect(result.errors).toEqual([]);
  expect(result.status).toBe(0);
  expect(result.output).toMatch(/no dependency violations found/);
});

describe('each layer rule refuses a deliberate violation, by name', () => {
  let result: ReturnType<typeof cruise>;
  beforeAll(() => {
    result = cruise(broken);
  });

  test('the run fails', () => {
    expect(result.status).not.toBe(0);
  });

  test.each(VIOLATIONS.map((v) => [v.rule, v.file, v]))('%s refuses the import added to %s', (_rule, _file, v) => {
    const { rule, file } = v as Violation;
    expect(result.errors).toContainEqual({ rule, from: file });
    // the message says why the rule exists: err-long prints its comment under the line
    expect(result.output).toContain(`error ${rule}: ${file}`);
  });
});

test('the core never special-cases an API by its endpoint (an optional hook of MeteredApi instead)', () => {
  for (const file of fs.readdirSync(path.join(root, 'lib', 'core'))) {
    const source = fs.readFileSync(path.join(root, 'lib', 'core', file), 'utf8');
    expect({ file, comparesEndpoint: /\bendpoint\s*[!=]==?|[!=]==?\s*[\w.]*endpoint\b|case\s+'(chat\.completions|completions|responses|embeddings)'/.test(source) }).toEqual({ file, comparesEndpoint: false });
  }
});
