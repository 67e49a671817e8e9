import BetterSqlite3 from 'better-sqlite3';
import { Kysely, type Selectable, SqliteDialect, type Updateable } from 'kysely';
import { migrate } from './migrations.js';
import type { Database, SourcesTable, TargetsTable, TasksTable } from './schema.js';

export type SourceRow = Selectable<SourcesTable>;
export type TargetRow = Selectable<TargetsTable>;
export type TaskRow = Selectable<TasksTable>;

/**
 * The console's persistence: sources, targets, tasks and pending target releases.
 * One Kysely query path; SQLite (a file in the data dir) is the embedded default.
 * Callers serialise read-modify-write sequences (the driver holds a mutex).
 */
export class ConsoleStore {
  readonly db: Kysely<Database>;

  private constructor(db: Kysely<Database>) {
    this.db = db;
  }

  static async openSqlite(file: string): Promise<ConsoleStore> {
    const sqlite = new BetterSqlite3(file);
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('busy_timeout = 5000');
    sqlite.pragma('foreign_keys = ON');
    const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
    await migrate(db as unknown as Kysely<unknown>);
    return new ConsoleStore(db);
  }

  close(): Promise<void> {
    return this.db.destroy();
  }

  insertSource(row: SourceRow): Promise<unknown> {
    return this.db.insertInto('sources').values(row).execute();
  }
  insertTarget(row: TargetRow): Promise<unknown> {
    return this.db.insertInto('targets').values(row).execute();
  }
  insertTask(row: TaskRow): Promise<unknown> {
    return this.db.insertInto('tasks').values(row).execute();
  }

  sourceByName(name: string): Promise<SourceRow | undefined> {
    return this.db.selectFrom('sources').selectAll().where('name', '=', name).executeTakeFirst();
  }
  sourceById(id: string): Promise<SourceRow | undefined> {
    return this.db.selectFrom('sources').selectAll().where('id', '=', id).executeTakeFirst();
  }
  listSources(): Promise<SourceRow[]> {
    return this.db.selectFrom('sources').selectAll().orderBy('name').execute();
  }
  targetByName(name: string): Promise<TargetRow | undefined> {
    return this.db.selectFrom('targets').selectAll().where('name', '=', name).executeTakeFirst();
  }
  targetById(id: string): Promise<TargetRow | undefined> {
    return this.db.selectFrom('targets').selectAll().where('id', '=', id).executeTakeFirst();
  }
  listTargets(): Promise<TargetRow[]> {
    return this.db.selectFrom('targets').selectAll().orderBy('name').execute();
  }
  taskBySource(sourceId: string): Promise<TaskRow | undefined> {
    return this.db.selectFrom('tasks').selectAll().where('source_id', '=', sourceId).executeTakeFirst();
  }
  tasksByTarget(targetId: string): Promise<TaskRow[]> {
    return this.db.selectFrom('tasks').selectAll().where('target_id', '=', targetId).execute();
  }
  listTasks(): Promise<TaskRow[]> {
    return this.db.selectFrom('tasks').selectAll().execute();
  }

  async updateSource(id: string, patch: Updateable<SourcesTable>): Promise<void> {
    await this.db.updateTable('sources').set(patch).where('id', '=', id).execute();
  }
  async updateTarget(id: string, patch: Updateable<TargetsTable>): Promise<void> {
    await this.db.updateTable('targets').set(patch).where('id', '=', id).execute();
  }
  async updateTask(id: string, patch: Updateable<TasksTable>): Promise<void> {
    await this.db.updateTable('tasks').set(patch).where('id', '=', id).execute();
  }

  /** Deleting a source deletes its task (foreign key cascade). */
  async deleteSource(id: string): Promise<void> {
    await this.db.deleteFrom('tasks').where('source_id', '=', id).execute();
    await this.db.deleteFrom('sources').where('id', '=', id).execute();
  }
  async deleteTarget(id: string): Promise<void> {
    await this.db.deleteFrom('releases').where('target_id', '=', id).execute();
    await this.db.deleteFrom('targets').where('id', '=', id).execute();
  }

  async addRelease(targetId: string, taskId: string): Promise<void> {
    await this.db.insertInto('releases').values({ target_id: targetId, task_id: taskId }).execute();
  }
  async releasesFor(targetId: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom('releases')
      .select('task_id')
      .where('target_id', '=', targetId)
      .execute();
    return rows.map((r) => r.task_id);
  }
  async clearRelease(targetId: string, taskId: string): Promise<void> {
    await this.db
      .deleteFrom('releases')
      .where('target_id', '=', targetId)
      .where('task_id', '=', taskId)
      .execute();
  }
}
