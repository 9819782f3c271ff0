/** The PostgreSQL the SQL suites run on: see bench/postgres-server.ts (shared with `npm run bench`). */
export { noticePostgres, postgresBinDir, realServerOnly, startPostgres, type PostgresHandle } from '../../bench/postgres-server';
