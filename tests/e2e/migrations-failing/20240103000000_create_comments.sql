-- migrate:up
-- Deliberately broken, for the failing-migration scenario of tests/e2e/cluster/app.sh: the table it
-- references does not exist, so PostgreSQL refuses it (relation "no_such_table" does not exist)
-- and, as each migration runs in a transaction, nothing of it is left behind.
CREATE TABLE "comments" (
  "id" bigserial NOT NULL,
  "post_id" bigint NOT NULL,
  PRIMARY KEY ("id"),
  CONSTRAINT "comments_post_id_fkey" FOREIGN KEY ("post_id") REFERENCES "no_such_table" ("id")
);
-- migrate:down
