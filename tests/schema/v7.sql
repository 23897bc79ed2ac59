-- A database at schema version 7 (before the run's kind had its own column),
-- made by agent/store/db.py of commit 998bc1a, with a few runs and requests;
-- tests/test_schema.py upgrades it.
PRAGMA user_version = 7;
BEGIN TRANSACTION;
CREATE TABLE "activity" ("cmid" INTEGER NOT NULL PRIMARY KEY, "course_id" INTEGER NOT NULL, "section" INTEGER NOT NULL, "name" VARCHAR(255) NOT NULL, "modname" VARCHAR(255) NOT NULL, "instance" INTEGER, "completion" INTEGER NOT NULL, FOREIGN KEY ("course_id") REFERENCES "course" ("id") ON DELETE CASCADE);
CREATE TABLE "boxactivity" ("cmid" INTEGER NOT NULL PRIMARY KEY, "box_course_id" INTEGER NOT NULL, "section" INTEGER NOT NULL, "name" VARCHAR(255) NOT NULL, "modname" VARCHAR(255) NOT NULL, "idnumber" VARCHAR(255), FOREIGN KEY ("box_course_id") REFERENCES "boxcourse" ("id") ON DELETE CASCADE);
CREATE TABLE "boxcourse" ("id" INTEGER NOT NULL PRIMARY KEY, "course_id" INTEGER NOT NULL, "shortname" VARCHAR(255) NOT NULL, "timemodified" INTEGER NOT NULL, "cacherev" INTEGER, "fetched_at" VARCHAR(255) NOT NULL);
CREATE TABLE "collected" ("box_course_id" INTEGER NOT NULL, "username" VARCHAR(100) NOT NULL, "box_cmid" INTEGER NOT NULL, "kind" VARCHAR(16) NOT NULL, "value" REAL, "version" VARCHAR(32) NOT NULL, PRIMARY KEY ("box_course_id", "username", "box_cmid", "kind"), FOREIGN KEY ("box_course_id") REFERENCES "boxcourse" ("id") ON DELETE CASCADE);
CREATE TABLE "course" ("id" INTEGER NOT NULL PRIMARY KEY, "shortname" VARCHAR(255) NOT NULL, "fullname" VARCHAR(255) NOT NULL, "timemodified" INTEGER NOT NULL, "cacherev" INTEGER, "fetched_at" VARCHAR(255) NOT NULL, "contents" TEXT NOT NULL);
CREATE TABLE "event" ("id" INTEGER NOT NULL PRIMARY KEY, "key" VARCHAR(64) NOT NULL, "type" VARCHAR(16) NOT NULL, "course_id" INTEGER, "username" VARCHAR(100) NOT NULL, "cmid" INTEGER, "data" TEXT NOT NULL, "event_time" VARCHAR(255), "clock_suspect" INTEGER NOT NULL, "queued_at" VARCHAR(255) NOT NULL, "status" VARCHAR(16) NOT NULL, "attempts" INTEGER NOT NULL, "last_error" TEXT, "sync_id" VARCHAR(36), "sent_at" VARCHAR(255));
CREATE TABLE event_count (status TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE "knownenrolment" ("site" VARCHAR(255) NOT NULL, "course_id" INTEGER NOT NULL, "user_id" INTEGER NOT NULL, "confirmed_at" VARCHAR(255) NOT NULL, PRIMARY KEY ("site", "course_id", "user_id"));
CREATE TABLE "knownuser" ("site" VARCHAR(255) NOT NULL, "username" VARCHAR(100) NOT NULL, "user_id" INTEGER NOT NULL, "confirmed_at" VARCHAR(255) NOT NULL, PRIMARY KEY ("site", "username"));
CREATE TABLE "loginattempt" ("id" INTEGER NOT NULL PRIMARY KEY, "address" VARCHAR(64) NOT NULL, "at" REAL NOT NULL);
CREATE TABLE "participant" ("box_course_id" INTEGER NOT NULL, "userid" INTEGER NOT NULL, "username" VARCHAR(100) NOT NULL, "profile" TEXT NOT NULL, "roles" TEXT NOT NULL, "lastcourseaccess" INTEGER NOT NULL, "recheck" INTEGER NOT NULL, PRIMARY KEY ("box_course_id", "userid"), FOREIGN KEY ("box_course_id") REFERENCES "boxcourse" ("id") ON DELETE CASCADE);
CREATE TABLE "secret" ("event_id" INTEGER NOT NULL PRIMARY KEY, "password" VARCHAR(255) NOT NULL, FOREIGN KEY ("event_id") REFERENCES "event" ("id") ON DELETE CASCADE);
CREATE TABLE "serverseen" ("course_id" INTEGER NOT NULL, "username" VARCHAR(100) NOT NULL, "cmid" INTEGER NOT NULL, "kind" VARCHAR(16) NOT NULL, "value" REAL NOT NULL, PRIMARY KEY ("course_id", "username", "cmid", "kind"));
CREATE TABLE "setting" ("key" VARCHAR(255) NOT NULL PRIMARY KEY, "value" TEXT NOT NULL);
CREATE TABLE "syncrequest" ("id" INTEGER NOT NULL PRIMARY KEY, "requested_at" VARCHAR(255) NOT NULL, "trigger" VARCHAR(16) NOT NULL, "force" INTEGER NOT NULL, "picked_at" VARCHAR(255), "sync_id" VARCHAR(36));
INSERT INTO "syncrequest" VALUES(1,'2026-11-06T10:00:00Z','verify',0,NULL,NULL);
INSERT INTO "syncrequest" VALUES(2,'2026-11-06T10:00:01Z','manual',1,NULL,NULL);
INSERT INTO "syncrequest" VALUES(3,'2026-11-06T10:00:02Z','cli',0,NULL,NULL);
CREATE TABLE "syncrun" ("id" VARCHAR(36) NOT NULL PRIMARY KEY, "trigger" VARCHAR(16) NOT NULL, "force" INTEGER NOT NULL, "status" VARCHAR(24) NOT NULL, "started_at" VARCHAR(255) NOT NULL, "completed_at" VARCHAR(255), "duration_s" REAL, "bytes_sent" INTEGER NOT NULL, "bytes_received" INTEGER NOT NULL, "courses" TEXT NOT NULL, "actions" TEXT NOT NULL, "errors" TEXT NOT NULL, "clock_offset_s" REAL, "pid" INTEGER, "phase" VARCHAR(24), "courses_done" INTEGER NOT NULL, "courses_total" INTEGER NOT NULL, "events_sent" INTEGER NOT NULL, "conflicts" INTEGER NOT NULL, "events_total" INTEGER NOT NULL, "notified" INTEGER NOT NULL, "collected" TEXT, "direction" VARCHAR(8), "box_bytes" TEXT);
INSERT INTO "syncrun" VALUES('run-0','manual',0,'completed','2026-11-01T10:00:00Z','2026-11-01T10:01:00Z',NULL,0,0,'[]','{}','[]',NULL,NULL,NULL,0,0,0,0,0,0,NULL,NULL,NULL);
INSERT INTO "syncrun" VALUES('run-1','schedule',0,'skipped_offline','2026-11-02T10:00:00Z','2026-11-02T10:01:00Z',NULL,0,0,'[]','{}','[]',NULL,NULL,NULL,0,0,0,0,0,0,NULL,NULL,NULL);
INSERT INTO "syncrun" VALUES('run-2','cli',0,'completed_with_errors','2026-11-03T10:00:00Z','2026-11-03T10:01:00Z',NULL,0,0,'[]','{}','[]',NULL,NULL,NULL,0,0,0,0,0,0,NULL,NULL,NULL);
INSERT INTO "syncrun" VALUES('run-3','verify',0,'completed','2026-11-04T10:00:00Z','2026-11-04T10:01:00Z',NULL,0,0,'[]','{"checked":3}','[]',NULL,NULL,NULL,0,0,0,0,0,0,NULL,NULL,NULL);
INSERT INTO "syncrun" VALUES('run-4','collect',1,'completed','2026-11-05T10:00:00Z','2026-11-05T10:01:00Z',NULL,0,0,'[]','{}','[]',NULL,NULL,NULL,0,0,0,0,0,0,NULL,NULL,NULL);
CREATE TABLE "twowayconflict" ("id" INTEGER NOT NULL PRIMARY KEY, "sync_id" VARCHAR(36) NOT NULL, "course_id" INTEGER NOT NULL, "username" VARCHAR(100) NOT NULL, "cmid" INTEGER NOT NULL, "kind" VARCHAR(16) NOT NULL, "box_value" REAL NOT NULL, "server_value" REAL NOT NULL, "kept" VARCHAR(8) NOT NULL, "rule" VARCHAR(120) NOT NULL, "at" VARCHAR(255) NOT NULL);
CREATE INDEX "activity_course_id" ON "activity" ("course_id");
CREATE UNIQUE INDEX "boxcourse_course_id" ON "boxcourse" ("course_id");
CREATE INDEX "boxactivity_box_course_id" ON "boxactivity" ("box_course_id");
CREATE INDEX "collected_box_course_id" ON "collected" ("box_course_id");
CREATE UNIQUE INDEX "event_key" ON "event" ("key");
CREATE INDEX "event_type" ON "event" ("type");
CREATE INDEX "event_course_id" ON "event" ("course_id");
CREATE INDEX "event_status" ON "event" ("status");
CREATE INDEX "event_sent_at" ON "event" ("sent_at");
CREATE INDEX "loginattempt_address" ON "loginattempt" ("address");
CREATE INDEX "loginattempt_at" ON "loginattempt" ("at");
CREATE INDEX "participant_box_course_id" ON "participant" ("box_course_id");
CREATE INDEX "syncrun_status" ON "syncrun" ("status");
CREATE INDEX "syncrun_started_at" ON "syncrun" ("started_at");
CREATE INDEX "twowayconflict_sync_id" ON "twowayconflict" ("sync_id");
CREATE INDEX event_queue ON event (status, course_id, id);
CREATE INDEX syncrun_status_started ON syncrun (status, started_at);
CREATE INDEX syncrun_offset_started ON syncrun (started_at) WHERE clock_offset_s IS NOT NULL;
CREATE TRIGGER event_count_insert AFTER INSERT ON event BEGIN
         INSERT OR IGNORE INTO event_count (status, n) VALUES (NEW.status, 0);
         UPDATE event_count SET n = n + 1 WHERE status = NEW.status;
       END;
CREATE TRIGGER event_count_delete AFTER DELETE ON event BEGIN
         UPDATE event_count SET n = n - 1 WHERE status = OLD.status;
       END;
CREATE TRIGGER event_count_update AFTER UPDATE OF status ON event
       WHEN OLD.status IS NOT NEW.status BEGIN
         UPDATE event_count SET n = n - 1 WHERE status = OLD.status;
         INSERT OR IGNORE INTO event_count (status, n) VALUES (NEW.status, 0);
         UPDATE event_count SET n = n + 1 WHERE status = NEW.status;
       END;
COMMIT;
