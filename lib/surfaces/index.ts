import { chatCompletions } from './chat/chat-completions';
import { completions } from './completions/completions';
import { embeddings } from './embeddings/embeddings';
import { messages } from './messages/messages';
import { responses } from './responses/responses';
import type { Surface } from '../relay/surface';

/** Every API the gateway meters, each served at `POST {basePath}{surface.path}`. */
export const SURFACES: readonly Surface[] = [chatCompletions, responses, completions, embeddings, messages];
