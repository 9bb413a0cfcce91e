package io.txmon.checkpoint;

import java.io.BufferedOutputStream;
import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.StandardOpenOption;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.LocalFileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager;

/**
 * The checkpoint file manager for checkpoints on a local disk
 * ({@code spark_jobs/session.checkpoint_location} chooses it).
 *
 * <p>Spark's default manager goes through Hadoop's FileContext, and Hadoop's local file
 * system without its native library (pyspark ships none) forks a process for each
 * permission it sets ({@code chmod}, twice per file: the file and its checksum) and each
 * link it resolves on rename ({@code readlink}): ~19 processes per micro-batch for the
 * offset and commit logs. Spark's FileSystem-based manager renames with plain Java I/O;
 * this one also writes each temp file with plain Java I/O (Hadoop sets a permission on
 * every file it creates, even when given none). The finished file is then renamed into
 * place by Spark, atomically (rename(2)); it has no Hadoop checksum file, which Hadoop's
 * reader does not require.
 */
public class LocalCheckpointFileManager extends FileSystemBasedCheckpointFileManager {

    public LocalCheckpointFileManager(Path path, Configuration hadoopConf) {
        super(path, hadoopConf);
    }

    @Override
    public FSDataOutputStream createTempFile(Path path) {
        FileSystem fs = fs();
        if (!(fs instanceof LocalFileSystem)) {
            return super.createTempFile(path);
        }
        File file = ((LocalFileSystem) fs).pathToFile(path);
        try {
            Files.createDirectories(file.toPath().getParent());
            return new FSDataOutputStream(new BufferedOutputStream(Files.newOutputStream(file.toPath(),
                    StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE)),
                    null);
        } catch (IOException e) {
            throw LocalCheckpointFileManager.<RuntimeException>unchecked(e);
        }
    }

    /** Rethrows the IOException itself, as Spark's Scala code does: Scala declares no checked
     * exceptions, so the overridden method cannot, and Spark's callers expect IOExceptions. */
    @SuppressWarnings("unchecked")
    private static <E extends Throwable> RuntimeException unchecked(Throwable e) throws E {
        throw (E) e;
    }
}
