-- migrate:up
-- Create "posts" table
CREATE TABLE "posts" (
  "id" bigserial NOT NULL,
  "user_id" bigint NOT NULL,
  "title" text NOT NULL,
  "body" text NOT NULL DEFAULT '',
  "created_at" timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY ("id"),
  CONSTRAINT "posts_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users" ("id") ON UPDATE NO ACTION ON DELETE CASCADE
);
-- Create index "posts_user_id_idx" to table: "posts"
CREATE INDEX "posts_user_id_idx" ON "posts" ("user_id");
-- migrate:down
