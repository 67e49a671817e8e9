import { type Kysely, type Migration, type MigrationProvider, Migrator } from 'kysely';

/** Migrations live in code (no files to ship); each runs once, in name order. */
const MIGRATIONS: Record<string, Migration> = {
  '0001-initial': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('sources')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('fingerprint', 'text', (c) => c.notNull().unique())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('last_seen_at', 'bigint')
        .addColumn('inventory', 'text')
        .addColumn('checks', 'text')
        .execute();
      await db.schema
        .createTable('targets')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('fingerprint', 'text', (c) => c.notNull().unique())
        .addColumn('address', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('last_seen_at', 'bigint')
        .addColumn('info', 'text')
        .execute();
      await db.schema
        .createTable('tasks')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('source_id', 'text', (c) =>
          c.notNull().unique().references('sources.id').onDelete('cascade'),
        )
        .addColumn('target_id', 'text', (c) => c.references('targets.id'))
        .addColumn('method', 'text', (c) => c.notNull())
        .addColumn('continuous_sync', 'integer', (c) => c.notNull())
        .addColumn('excludes', 'text', (c) => c.notNull())
        .addColumn('stage', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('error', 'text')
        .addColumn('progress', 'text')
        .addColumn('run_id', 'integer', (c) => c.notNull())
        .addColumn('sync_request', 'integer', (c) => c.notNull())
        .addColumn('launch_phase', 'text')
        .addColumn('last_sync', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('releases')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('target_id', 'text', (c) => c.notNull())
        .addColumn('task_id', 'text', (c) => c.notNull())
        .execute();
    },
  },
  '0002-task-sync-interval': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('tasks').addColumn('sync_interval_seconds', 'integer').execute();
    },
  },
  '0003-task-rate-limit': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('tasks').addColumn('rate_limit', 'text').execute();
    },
  },
  '0004-task-sync-excludes': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('tasks').addColumn('sync_excludes', 'text').execute();
    },
  },
  '0005-task-disks': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('tasks').addColumn('disk_map', 'text').execute();
      await db.schema.alterTable('tasks').addColumn('resize', 'text').execute();
      await db.schema.alterTable('tasks').addColumn('disk_plan', 'text').execute();
    },
  },
  '0006-task-verify': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('tasks').addColumn('verify_after', 'text').execute();
      await db.schema
        .alterTable('tasks')
        .addColumn('verify_request', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema.alterTable('tasks').addColumn('verify_mode', 'text').execute();
      await db.schema.alterTable('tasks').addColumn('verification', 'text').execute();
    },
  },
  '0007-task-compression': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('tasks').addColumn('compression', 'text').execute();
    },
  },
};

const provider: MigrationProvider = { getMigrations: async () => MIGRATIONS };

export async function migrate(db: Kysely<unknown>): Promise<void> {
  const { error, results } = await new Migrator({ db, provider }).migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    throw new Error(`database migration ${failed} failed: ${(error as Error).message}`, { cause: error });
  }
}
