"""Names of the files and columns of a prepared dataset directory (one place, no literals).

OUT/schema.json                 Schema (fields, vocab sizes, sequences, tasks, splits)
OUT/stats.json                  rows, users, items, label rates, NaN labels, sources' figures
OUT/vocab/<field>.parquet       value (str), index (int32), count (int64) per categorical field
OUT/{train,valid,test}/part-*.parquet
    <field> ...                 int32 codes, one column per schema field, schema order
    __user                      int64 raw user key (not OOV-merged, for gAUC)
    __time                      int64 time_ms of the impression
    __label__<task>             float32, NaN where the label is missing
    __oracle__<task>            float32, simulator only: the label's true probability
    __seq_start__<behaviour>    int64 [start, end): rows of sequences/<behaviour>.parquet
    __seq_end__<behaviour>      holding this user's events strictly before __time
OUT/items.parquet               with an items table only: every item of the table, the ones
    __item                      the log never showed too; the raw item key (str), and the
    <item field> ...            int32 codes of every item field (the item key OOV when
                                unseen in train, a field read from the log OOV)
OUT/sequences/<behaviour>.parquet
    __user, __time, <side field> ...   sorted by (__user, __time); the row number is the
                                       index the pointers above refer to
"""

SCHEMA = "schema.json"
STATS = "stats.json"
VOCAB_DIR = "vocab"
SEQ_DIR = "sequences"
SPLITS = ("train", "valid", "test")
ITEMS = "items.parquet"
# rows per Parquet row group of a split's part files: the unit parts.py reads and shards
ROW_GROUP_ROWS = 65_536

USER = "__user"
TIME = "__time"
ITEM = "__item"


def label_col(task: str) -> str:
    return f"__label__{task}"


def seq_start_col(behaviour: str) -> str:
    return f"__seq_start__{behaviour}"


def seq_end_col(behaviour: str) -> str:
    return f"__seq_end__{behaviour}"


def oracle_col(task: str) -> str:
    return f"__oracle__{task}"
