import path from 'node:path';
import express, { type Express } from 'express';

/** Serves the chat page at `/` (owned by the chat-page work: see issue 3). */
export function mountChatPage(app: Express): void {
  app.use(express.static(path.join(__dirname, 'public')));
}
