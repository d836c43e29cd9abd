// Drives tpcd's PostgreSQL front door with the PostgreSQL JDBC driver, as a
// Java application would. Run as a single source file:
//   java -cp postgresql.jar JdbcClient.java URL USER PASSWORD KEY_ON_0 KEY_ON_1 KEY_LEFT KEY_PREPARED_0 KEY_PREPARED_1
// Prints one line per check; exits non-zero at the first surprise. The Go
// test (clients_test.go) then checks the rows on the data servers.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class JdbcClient {
    static void expect(boolean cond, String what) {
        if (!cond) {
            System.out.println("FAILED: " + what);
            System.exit(1);
        }
        System.out.println("ok: " + what);
    }

    interface Sql {
        void run() throws SQLException;
    }

    // refused runs something that must fail and returns its error.
    static SQLException refused(Sql s, String what) {
        try {
            s.run();
        } catch (SQLException e) {
            return e;
        }
        expect(false, what);
        return null;
    }

    static Connection connect(String url, String user, String password) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", user);
        p.setProperty("password", password);
        p.setProperty("connectTimeout", "60");
        // Server-side named statements from the first execution on, not
        // the fifth: what a busy application's statements become.
        p.setProperty("prepareThreshold", "1");
        return DriverManager.getConnection(url, p);
    }

    public static void main(String[] a) throws Exception {
        String url = a[0], user = a[1], password = a[2];
        int k0 = Integer.parseInt(a[3]), k1 = Integer.parseInt(a[4]), kLeft = Integer.parseInt(a[5]);
        int kp0 = Integer.parseInt(a[6]), kp1 = Integer.parseInt(a[7]);

        // A transaction across both participants (the driver sends BEGIN
        // before the first statement once autocommit is off).
        Connection c = connect(url, user, password);
        c.setAutoCommit(false);
        try (PreparedStatement ins = c.prepareStatement("INSERT INTO kv (k, v) VALUES (?, ?)")) {
            ins.setInt(1, k0);
            ins.setString(2, "jdbc");
            expect(ins.executeUpdate() == 1, "insert on participant 0");
            ins.setInt(1, k1);
            ins.setString(2, "jdbc");
            ins.executeUpdate();
        }
        c.commit();
        try (PreparedStatement sel = c.prepareStatement("SELECT k, v FROM kv WHERE k = ?")) {
            sel.setInt(1, k1);
            try (ResultSet rs = sel.executeQuery()) {
                expect(rs.next() && rs.getInt("k") == k1 && rs.getString("v").equals("jdbc") && !rs.next(),
                        "read back from participant 1 by column name");
            }
        }
        c.commit();

        // One prepared statement run again and again (a named statement on
        // the server), here in one transaction on both participants.
        try (PreparedStatement ins = c.prepareStatement("INSERT INTO kv (k, v) VALUES (?, ?)")) {
            for (int k : new int[] {kp0, kp1}) {
                ins.setInt(1, k);
                ins.setString(2, "jdbc prepared");
                ins.executeUpdate();
            }
        }
        c.commit();

        // A failing statement: the participant's SQLSTATE, then the block
        // is failed until rollback.
        SQLException e = refused(() -> {
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO kv (k, v) VALUES (?, 'dup')")) {
                ins.setInt(1, k0);
                ins.executeUpdate();
            }
        }, "duplicate refused");
        expect("23505".equals(e.getSQLState()), "duplicate refused with 23505");
        e = refused(() -> {
            try (Statement s = c.createStatement()) {
                s.executeQuery("SELECT 1");
            }
        }, "failed block refuses statements");
        expect("25P02".equals(e.getSQLState()), "failed block answers 25P02");
        c.rollback();

        // A routing error; a savepoint, which tpcd does not offer.
        e = refused(() -> {
            try (Statement s = c.createStatement()) {
                s.executeUpdate("UPDATE kv SET v = 'x'");
            }
        }, "unroutable update refused");
        expect("22023".equals(e.getSQLState()), "unroutable update refused with 22023");
        c.rollback();
        e = refused(() -> c.setSavepoint("s"), "savepoint refused");
        expect("0A000".equals(e.getSQLState()), "savepoint refused with 0A000");
        c.rollback();
        c.close();

        // A client that leaves mid-transaction: its row must not stay.
        Connection left = connect(url, user, password);
        left.setAutoCommit(false);
        try (PreparedStatement ins = left.prepareStatement("INSERT INTO kv (k, v) VALUES (?, 'left behind?')")) {
            ins.setInt(1, kLeft);
            ins.executeUpdate();
        }
        left.close();
        System.out.println("ok: left mid-transaction");

        // A wrong password.
        e = refused(() -> connect(url, user, "wrong").close(), "wrong password refused");
        expect("28P01".equals(e.getSQLState()), "wrong password refused with 28P01");
        System.out.println("done");
    }
}
