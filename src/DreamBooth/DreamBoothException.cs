namespace DreamBooth;

/// <summary>
/// A problem with the user's input (argument, setting, file, folder): the message is one line that
/// names the file/setting and says what was expected. The CLI prints only the message and exits 2.
/// </summary>
public class DreamBoothException : Exception
{
    public DreamBoothException(string message) : base(message) { }
    public DreamBoothException(string message, Exception inner) : base(message, inner) { }
}
