-- What the stages produce: per-chunk transcripts, scenes, the analysis and the
-- final insight document with its captions. Keyed so a redelivered message
-- overwrites its own row instead of adding one (invariant I2).

CREATE TABLE chunk_transcripts (
  job_id text NOT NULL,
  chunk_index int NOT NULL,
  chunk_count int NOT NULL,
  start_seconds double precision NOT NULL,
  end_seconds double precision NOT NULL,
  text text NOT NULL,
  segments jsonb NOT NULL DEFAULT '[]'::jsonb,
  language text,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (job_id, chunk_index)
);

CREATE TABLE scenes (
  job_id text NOT NULL,
  scene_index int NOT NULL,
  start_seconds double precision NOT NULL,
  end_seconds double precision NOT NULL,
  keyframe_uri text,
  thumbnail_uri text,
  PRIMARY KEY (job_id, scene_index)
);

CREATE TABLE analyses (
  job_id text PRIMARY KEY,
  document jsonb NOT NULL,
  model text NOT NULL,
  prompt_version text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE insights (
  job_id text PRIMARY KEY,
  document jsonb NOT NULL,
  schema_version text NOT NULL,
  captions_vtt text,
  captions_srt text,
  created_at timestamptz NOT NULL DEFAULT now()
);
