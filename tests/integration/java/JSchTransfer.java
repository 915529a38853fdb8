// An SFTP upload and download with JSch (com.jcraft.jsch, Debian's
// libjsch-java 0.1.55), as Java file-transfer products of 2018 make them.
// Compiled and run by tests/integration/test_policies.py:
//
//   java JSchTransfer HOST PORT USER KEY LOCAL REMOTE BACK [NAME=VALUE ...]
//
// The NAME=VALUE pairs are JSch session settings.  The negotiated
// algorithms are logged to standard error ("jsch: kex: ...").  Any
// failure, a refused CLOSE included, exits non-zero.
import com.jcraft.jsch.ChannelSftp;
import com.jcraft.jsch.JSch;
import com.jcraft.jsch.Logger;
import com.jcraft.jsch.Session;

public class JSchTransfer {
    public static void main(String[] args) throws Exception {
        JSch.setLogger(new Logger() {
            public boolean isEnabled(int level) {
                return level >= Logger.INFO;
            }

            public void log(int level, String message) {
                System.err.println("jsch: " + message);
            }
        });
        JSch jsch = new JSch();
        jsch.addIdentity(args[3]);
        Session session = jsch.getSession(args[2], args[0], Integer.parseInt(args[1]));
        session.setConfig("StrictHostKeyChecking", "no");
        for (int i = 7; i < args.length; i++) {
            String[] pair = args[i].split("=", 2);
            session.setConfig(pair[0], pair[1]);
        }
        session.connect(30000);
        ChannelSftp sftp = (ChannelSftp) session.openChannel("sftp");
        sftp.connect(30000);
        sftp.put(args[4], args[5]);
        sftp.get(args[5], args[6]);
        sftp.disconnect();
        session.disconnect();
    }
}
