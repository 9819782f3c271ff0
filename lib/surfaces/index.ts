import { chatCompletions } from './chat/chat-completions';
import { completions } from './completions/completions';
import { embeddings } from './embeddings/embeddings';
import { messages } from './messages/messages';
import { responses } from './responses/responses';
import { countTokens } from './messages/count-tokens';
import type { Surface, Tool } from '../relay/surface';

/** Every API the gateway meters, each served at `POST {basePath}{surface.path}`. */
export const SURFACES: readonly Surface[] = [chatCompletions, responses, completions, embeddings, messages];

/** The free routes of those APIs, each served at `POST {basePath}{tool.path}` by its own handler. */
export const TOOLS: readonly Tool[] = [countTokens];
