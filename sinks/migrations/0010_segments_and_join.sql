-- Long media is split into time segments, each cut into audio chunks and searched for
-- scenes by its own message, and the two branches (audio, scenes) run side by side.
-- Chunks and scene pieces are now keyed by segment too. A scene that crosses a segment
-- border is stored as two pieces, the later one marked as not opening with a cut, and
-- joined when read (sinks/scenes.py); its sharpness decides which piece's keyframe wins.
ALTER TABLE chunk_transcripts ADD COLUMN segment_index int NOT NULL DEFAULT 0;
ALTER TABLE chunk_transcripts DROP CONSTRAINT chunk_transcripts_pkey;
ALTER TABLE chunk_transcripts ADD PRIMARY KEY (job_id, segment_index, chunk_index);

ALTER TABLE scenes ADD COLUMN segment_index int NOT NULL DEFAULT 0;
ALTER TABLE scenes ADD COLUMN opens_with_cut boolean NOT NULL DEFAULT true;
ALTER TABLE scenes ADD COLUMN sharpness double precision NOT NULL DEFAULT 0;
ALTER TABLE scenes DROP CONSTRAINT scenes_pkey;
ALTER TABLE scenes ADD PRIMARY KEY (job_id, segment_index, scene_index);

-- The join: one row per branch and segment once that branch has recorded the segment
-- (audio: cut into chunk_count chunks; scenes: pieces stored). The job is ready for
-- analysis when both branches have every segment and every chunk is transcribed.
CREATE TABLE job_parts (
  job_id text NOT NULL,
  branch text NOT NULL CHECK (branch IN ('audio', 'scenes')),
  segment_index int NOT NULL,
  segment_count int NOT NULL CHECK (segment_count > 0),
  chunk_count int,
  recorded_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (job_id, branch, segment_index),
  CHECK (segment_index >= 0 AND segment_index < segment_count),
  CHECK ((branch = 'audio') = (chunk_count IS NOT NULL))
);
