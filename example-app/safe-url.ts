/** `url` without its password, for messages and logs (`INFERY_REDIS_URL`, `INFERY_DATABASE_URL`). */
export function withoutPassword(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(an unparsable URL)';
  }
}
