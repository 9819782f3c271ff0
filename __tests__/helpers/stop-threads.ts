/**
 * Loaded by jest before every test file (jest.config.js `setupFilesAfterEnv`): jest loads the library once per
 * test file, so each file could leave a tokenizer thread of its own behind until it stops by itself (5 minutes idle).
 * Stopped when the file ends instead, so a run never holds many vocabularies at once.
 */
import { stopTokenizerThreads } from '../../lib/ledgers/billing/tokenizer-thread';

afterAll(() => stopTokenizerThreads());
